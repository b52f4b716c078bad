"""Build and maintenance tools (run as scripts or with ``python -m tools.NAME``); not shipped to devices."""
