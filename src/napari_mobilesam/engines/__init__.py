"""CPU inference engines: MobileSAM's image encoder and mask decoders in OpenVINO (float32
and int8), converted once per weights file, checked against torch, and chosen by
measurement, per network."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "names": ["ENGINES"],
        "choice": ["check_engine", "choose_engine", "image_encoder", "measure_engines"],
        "cache": ["engine_dir", "engine_path", "weights_fingerprint"],
        "decoder_choice": ["mask_decoder_engine", "measure_decoder_engines"],
        "openvino_decoder": ["OpenVINODecoder", "decoder_fingerprint"],
        "calibration": ["CALIBRATION_IMAGES", "calibration_images", "encoder_input"],
        "openvino_engine": [
            "CPU_INSTALL",
            "EngineUnavailableError",
            "OpenVINOEncoder",
            "openvino_available",
            "openvino_encoder",
        ],
    },
)
