#!/usr/bin/env python3
"""Build dlib's CC0 face-recognition ResNet as TFLite models (see tools/dlib_resnet/build.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.dlib_resnet.build import main  # after the path insert above: run as a script

if __name__ == "__main__":
    raise SystemExit(main())
