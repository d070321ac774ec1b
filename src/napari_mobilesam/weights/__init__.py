"""Model weights: the registry of official files, verified download into the cache, offline
use, and strict loading of checkpoint files."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "fetch": [
            "CACHE_ENV",
            "CHECKPOINTS",
            "DEFAULT_CHECKPOINT",
            "ID_KINDS",
            "WEIGHTS_ENV",
            "Checkpoint",
            "WeightsError",
            "cache_dir",
            "fetch_checkpoint",
            "file_id",
            "resolve_checkpoint",
            "verify_checkpoint_file",
        ],
        "checkpoints": ["load_state_dict", "load_weights_into"],
    },
)
