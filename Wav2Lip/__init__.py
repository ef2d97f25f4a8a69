"""Wav2Lip lip sync: the network (``model``), its audio features (``audio``), an ONNX export (``export``) and
backend-agnostic runners (``runner``). Importing the package imports nothing heavy; import the submodules."""

FPS_MEL = 80  # mel columns per second (16 kHz / hop 200)
MEL_STEP = 16  # mel columns per video frame window
IMG_SIZE = 96  # face crop side
