"""Small helpers shared by the DINO model and trainer (box geometry)."""
