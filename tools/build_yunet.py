#!/usr/bin/env python3
"""Build libfacedetection's BSD-3 YuNet face detector as a TFLite model (see tools/yunet/build.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.yunet.build import main  # after the path insert above: run as a script

if __name__ == "__main__":
    raise SystemExit(main())
