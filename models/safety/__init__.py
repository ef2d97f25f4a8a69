"""Content safety: the NudeNet 320n detector (its ONNX file ships in the ``nudenet`` wheel), arrays in, arrays out.

``models.safety.labels`` (the classes) imports nothing heavy; ``models.safety.nudenet`` holds the detector.
"""
