"""Developer and release tools (run as scripts: python tools/NAME.py); a package so tests can import their helpers."""
