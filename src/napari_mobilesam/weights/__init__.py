"""Model weights: the registry of official files, verified download into the cache, offline
use, and strict loading of checkpoint files."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "registry": [
            "CHECKPOINTS",
            "DEFAULT_CHECKPOINT",
            "ID_KINDS",
            "Checkpoint",
            "WeightsError",
        ],
        "verify": ["file_id", "verify_checkpoint_file"],
        "fetch": [
            "CACHE_ENV",
            "WEIGHTS_ENV",
            "cache_dir",
            "fetch_checkpoint",
            "resolve_checkpoint",
        ],
        "checkpoints": ["load_state_dict", "load_weights_into"],
        "build": ["build_mobile_sam"],
        "needed": ["missing_checkpoints", "missing_files_message"],
    },
)
