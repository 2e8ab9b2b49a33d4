"""The built-in layers, one layer (or a close family) per module."""
