"""The parts of tools/fuzz.py: the mutator and the targets, one module per kind of input."""
