"""Many images: inputs (files, folders, globs, samples), outputs written atomically, the
runner (in-process or dask.distributed) and the ``napari-mobilesam`` console script."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "runner": [
            "BatchReport",
            "FileResult",
            "load_models",
            "segment_file",
            "segment_files",
        ],
        "settings": ["BatchSettings"],
        "inputs": ["InputItem", "find_inputs", "read_image"],
    },
)
