"""The central side: store, ingest workers, review and the fleet console (never imported by the device path)."""
