"""Content safety: the NudeNet 320n detector (its ONNX file ships in the ``nudenet`` wheel), arrays in, arrays out."""

from models.safety.nudenet import LABELS, Detections, NudeNetDetector, packaged_model_path

__all__ = ["LABELS", "Detections", "NudeNetDetector", "packaged_model_path"]
