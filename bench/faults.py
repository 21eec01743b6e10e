"""The throughput run again with faults: ``python -m bench faults`` (see bench/throughput.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

from bench.throughput import main

if __name__ == "__main__":
    sys.exit(main(faults=True))
