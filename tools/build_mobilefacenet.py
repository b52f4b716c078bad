#!/usr/bin/env python3
"""Build MobileFaceNet as a full-integer int8 TFLite model (see tools/mobilefacenet/build.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.mobilefacenet.build import main  # after the path insert above: run as a script

if __name__ == "__main__":
    raise SystemExit(main())
