"""Demonstrations: robomimic-format HDF5, scripted experts, generation and replay."""
