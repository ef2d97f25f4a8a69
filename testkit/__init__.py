"""Shared test and benchmark helpers: stand-in ONNX models, synthetic clips, and a real-server runner."""
