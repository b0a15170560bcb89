"""DAVIS 2016 semi-supervised evaluation (Mask-Propagation ``eval_davis_2016.py``): ``eval_davis.py --davis16``.

Single object (annotation > 0), 0/255 greyscale PNGs ``<output>/<video>/%05d.png``, image set
``../../2017/trainval/ImageSets/2016/val.txt`` relative to ``<davis>/ImageSets`` (the 2016 list of the
2017 release), J&F written when the ground truth is there. Same options as ``eval_davis.py``.

    python eval_davis_2016.py --davis ../DAVIS/2016 --output results/d16
"""
from __future__ import annotations

import sys

from eval_davis import main

if __name__ == "__main__":
    sys.exit(main(davis16=True))
