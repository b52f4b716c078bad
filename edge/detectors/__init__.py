"""Face detector plugins: one module per model family, sharing ``base`` (interface, Reach, NMS)."""
