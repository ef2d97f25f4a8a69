"""Masks on aligned face crops: feathered box, XSeg occlusion, BiSeNet face parsing."""
