"""Per-family ONNX export and import rules."""
