"""ort_cam: gradient-based class activation maps for ONNX classifiers on stock onnxruntime."""

__version__ = "0.1.0"
