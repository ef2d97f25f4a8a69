"""Gender diffusion family: Stable Diffusion 1.5 checkpoints through diffusers (imported lazily)."""
