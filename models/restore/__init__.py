"""Face restoration (GFPGAN/CodeFormer and the built-in restorer), upscalers and the enhance pipeline."""
