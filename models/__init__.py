"""Inference layer: arrays in, arrays out. No HTTP, no request objects."""
