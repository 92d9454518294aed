"""Reconstruction stages: camera and shape, photometric fit, UV unwrapping, first-order
de-lighting."""
