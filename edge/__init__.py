"""edge: camera-side face recognition firmware."""

__version__ = "0.1.0"
