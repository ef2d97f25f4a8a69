"""Lip sync: the built-in loudness-driven preview, the Wav2Lip loaders (wrapping ``Wav2Lip/runner.py``) and the face
geometry they share (crop box, feathered lower-face mask, paste). Arrays in, arrays out."""
