"""Ray Serve deployment of the face studio (``serve/app.py``) and its config files (cpu, gpu, gpu_load)."""
