#!/usr/bin/env python3
"""Build WardSync's bundle and installers: `python packaging/build.py --help`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wardsync_build.cli import main

if __name__ == "__main__":
    sys.exit(main())
