"""The full-integer MobileFaceNet: the shipped float tflite quantised to int8 (build time only)."""
