"""Developer and release tools (run as scripts: ``python tools/NAME.py``); shared pieces are importable as ``tools.*``."""
