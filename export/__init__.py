"""Checkpoint -> ONNX model bundle. `export.bundle` is torch-free and shared with the service."""
