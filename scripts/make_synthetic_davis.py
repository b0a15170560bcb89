#!/usr/bin/env python
"""Generate a small synthetic DAVIS-layout dataset (see dataset/synthetic.py); same as ``python -m dataset.synthetic``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.synthetic import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
