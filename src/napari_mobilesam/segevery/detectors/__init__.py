"""Object detectors that propose SegEvery's boxes: ultralytics YOLO checkpoints and their
ONNX exports."""
