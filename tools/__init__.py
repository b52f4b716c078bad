"""Build, measurement and release tools (``python tools/NAME.py`` or ``python -m tools.NAME``); not shipped to devices."""
