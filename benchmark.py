"""Entry point of the benchmark: ``python benchmark.py [options]`` (same as ``python -m benchmark``).

The code lives in the ``benchmark/`` package (a package is imported before a module of the same name,
so ``import benchmark`` always means the package); see ``python benchmark.py --help``.
"""
import sys

from benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
