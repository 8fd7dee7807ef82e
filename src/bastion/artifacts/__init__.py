"""Artifacts a run leaves behind: results.json, deployment bundles, ONNX graphs."""
