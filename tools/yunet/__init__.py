"""libfacedetection's YuNet rebuilt in PyTorch from the ``yuface`` wheel and converted to TFLite (build time only)."""
