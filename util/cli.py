"""The tail every command-line script shares: expected failures become one ``error: …`` line."""
from __future__ import annotations

import sys
from typing import Any, Callable


def run_cli(run: Callable[[Any], int | None], args: Any, errors: tuple[type[BaseException], ...], code: int = 2,
            interrupted: str = "interrupted") -> int:
    """``run(args)`` (``None`` counts as success); an exception in ``errors`` prints one line on stderr
    and returns ``code``; Ctrl-C prints ``interrupted`` and returns 130 without a traceback."""
    try:
        return run(args) or 0
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
