"""The command-line layer every script shares: argument validation and the one-line error tail.

Bad input is reported as ONE line on stderr, ``error: --flag VALUE: what is wrong; what to do``, with
exit status 2 and no traceback, before any long work starts:

* :class:`CliError` is that error; :func:`run_cli` prints it (and any other expected error type) and
  returns 2;
* :class:`CliParser` (or :func:`one_line_errors` on an existing parser) makes argparse's own errors
  (a missing option, ``--top_k abc``, an unknown option) the same single line;
* the validators (:func:`input_file`, :func:`input_dir`, :func:`output_dir`, :func:`output_file`,
  :func:`positive_int`, :func:`non_negative_int`, :func:`int_in_range`, :func:`positive_float`,
  :func:`device`) check an option and raise :class:`CliError`. Output folders are created when they are
  checked, so a path that cannot be written is refused before hours of work, and an output that is,
  contains or lies inside one of the inputs is refused, so no run writes over a file the user gave.

Anything unexpected becomes one line too (type and message, exit 1); ``MIVOS_DEBUG=1`` in the
environment (or ``--debug`` on scripts that have it) shows the traceback instead. Ctrl-C and SIGTERM
print ``interrupted`` and exit 130 / 143 (128 + the signal number) without a traceback.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NoReturn

DEBUG_ENV = "MIVOS_DEBUG"


class CliError(ValueError):
    """Bad command-line input. ``str(e)`` = ``--flag VALUE: problem; fix`` (one line)."""

    def __init__(self, flag: str, value: Any, problem: str, fix: str | None = None):
        self.flag, self.value, self.problem, self.fix = flag, value, problem, fix
        super().__init__(self.line())

    def line(self) -> str:
        head = self.flag if self.value is None or self.value == "" else f"{self.flag} {self.value}"
        text = f"{head}: {self.problem}" + (f"; {self.fix}" if self.fix else "")
        return " ".join(text.split())   # one line whatever the parts contained


class Interrupted(KeyboardInterrupt):
    """SIGTERM turned into an exception, so it unwinds (and cleans up) like Ctrl-C."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def debug_enabled(args: Any = None) -> bool:
    """``MIVOS_DEBUG`` set to anything but ``0``/empty, or a true ``debug`` option in ``args``."""
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        return True
    if isinstance(args, Mapping):
        return bool(args.get("debug", False))
    return bool(getattr(args, "debug", False))


_handler_pid: int | None = None


def _raise_interrupted(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    if os.getpid() != _handler_pid:
        # a forked worker (multiprocessing pool, DataLoader) inherited the handler: terminate it as the
        # default action would, instead of unwinding it with a traceback
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Interrupted(signum)


def install_sigterm_as_interrupt() -> Any:
    """Make SIGTERM raise :class:`Interrupted` in the main thread of this process (like Ctrl-C); returns
    the previous handler (``None`` outside the main thread, where handlers cannot be set)."""
    global _handler_pid
    if threading.current_thread() is not threading.main_thread():
        return None
    _handler_pid = os.getpid()
    return signal.signal(signal.SIGTERM, _raise_interrupted)


def _expected_types(errors: Iterable) -> tuple[type[BaseException], ...]:
    """``errors`` entries as types; a ``"module:Name"`` string counts once that module is imported
    (so a script need not import torch just to name ``util.checkpoint:CheckpointError``)."""
    types: list[type[BaseException]] = [CliError]
    for spec in errors:
        if isinstance(spec, str):
            module, _, name = spec.partition(":")
            mod = sys.modules.get(module)
            if mod is not None and hasattr(mod, name):
                types.append(getattr(mod, name))
        else:
            types.append(spec)
    return tuple(types)


def run_cli(run: Callable[[Any], int | None], args: Any,
            errors: Iterable[type[BaseException] | str] = (), code: int = 2,
            interrupted: str = "interrupted") -> int:
    """``run(args)`` (``None`` counts as success) with the shared error tail.

    :class:`CliError` or an exception in ``errors`` (types, or ``"module:Name"`` strings resolved when the
    error happens) → one line on stderr and ``code``; any other exception → one line with its type,
    exit 1 (re-raised with its traceback under ``MIVOS_DEBUG=1`` or ``--debug``); Ctrl-C → 130, SIGTERM → 143, after
    printing ``interrupted``."""
    errors = tuple(errors)
    previous = install_sigterm_as_interrupt()
    try:
        return run(args) or 0
    except KeyboardInterrupt as e:
        print(interrupted, file=sys.stderr)
        return 128 + (e.signum if isinstance(e, Interrupted) else int(signal.SIGINT))
    except Exception as e:  # noqa: BLE001 - expected errors and the last resort: one line, no traceback
        if isinstance(e, _expected_types(errors)):
            print(f"error: {first_line(e)}", file=sys.stderr)
            return code
        if debug_enabled(args):
            raise
        print(f"error: {type(e).__name__}: {first_line(e)} (unexpected; set {DEBUG_ENV}=1 for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def first_line(e: BaseException) -> str:
    """The message of ``e`` on one line (``OSError``'s strerror and file name when that is all there is)."""
    text = str(e).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        # re-raised from a DataLoader worker: the original error is the traceback's last line
        last = [ln.strip() for ln in text.splitlines() if ln.strip()][-1]
        return re.sub(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\w*: ", "", last)
    if isinstance(e, OSError) and e.strerror and not text.startswith(e.strerror) and e.filename:
        text = f"{e.filename}: {e.strerror}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


# ------------------------------------------------------------------------------------------ argparse
_ARGPARSE_PATTERNS: tuple[tuple[re.Pattern, Callable[[re.Match], str]], ...] = (
    (re.compile(r"^argument ([^:]+): invalid (\w+) value: '(.*)'$"),
     lambda m: f"{_flag(m[1])} {m[3]}: not a valid {'integer' if m[2] == 'int' else 'number' if m[2] == 'float' else m[2]}"
               f" value; give a {'whole number' if m[2] == 'int' else 'number' if m[2] == 'float' else 'valid value'}"),
    (re.compile(r"^argument ([^:]+): invalid choice: '?(.*?)'? \(choose from (.*)\)$"),
     lambda m: f"{_flag(m[1])} {m[2]}: not one of the choices; choose from {m[3]}"),
    (re.compile(r"^argument ([^:]+): expected (.*)$"),
     lambda m: f"{_flag(m[1])}: expected {m[2]}; see -h"),
    (re.compile(r"^argument ([^:]+): not allowed with argument (.*)$"),
     lambda m: f"{_flag(m[1])}: not allowed together with {_flag(m[2])}; give only one of them"),
    (re.compile(r"^argument ([^:]+): (.*)$"), lambda m: f"{_flag(m[1])} {m[2]}"),
    (re.compile(r"^the following arguments are required: (.*)$"),
     lambda m: f"{_flag(m[1].split(', ')[0])}: required option missing; see -h (missing: {m[1]})"),
    (re.compile(r"^one of the arguments (.*) is required$"),
     lambda m: f"{_flag(m[1].split()[0])}: one of {m[1]} is required; see -h"),
    (re.compile(r"^unrecognized arguments: (.*)$"),
     lambda m: f"{m[1].split()[0]}: unrecognized argument; see -h for the options (unrecognized: {m[1]})"),
)


def _flag(text: str) -> str:
    """``-b/--batch_size`` → ``--batch_size`` (the long form names the option)."""
    parts = text.strip().split("/")
    longs = [p for p in parts if p.startswith("--")]
    return longs[0] if longs else parts[0]


def argparse_message(message: str) -> str:
    """argparse's error text rewritten as ``--flag VALUE: problem; fix``."""
    message = " ".join(message.split())
    for pattern, render in _ARGPARSE_PATTERNS:
        m = pattern.match(message)
        if m:
            return render(m)
    return message


def _one_line_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    print(f"error: {argparse_message(message)}", file=sys.stderr)
    raise SystemExit(2)


class CliParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one ``error: --flag VALUE: problem; fix`` line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        _one_line_error(self, message)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give an existing parser :class:`CliParser`'s one-line errors (for parsers built elsewhere)."""
    parser.error = lambda message: _one_line_error(parser, message)  # type: ignore[method-assign]
    return parser


def fail(flag: str, value: Any, problem: str, fix: str | None = None) -> NoReturn:
    """Print the one-line error and exit 2 (for checks that run outside :func:`run_cli`)."""
    print(f"error: {CliError(flag, value, problem, fix).line()}", file=sys.stderr)
    raise SystemExit(2)


# ---------------------------------------------------------------------------------------- numbers
def positive_int(flag: str, value: int | None, allow_none: bool = False) -> int | None:
    """``value`` if it is an integer ≥ 1."""
    if value is None and allow_none:
        return None
    if value is None or int(value) != value or value < 1:
        raise CliError(flag, value, "must be a positive whole number (1 or more)")
    return int(value)


def non_negative_int(flag: str, value: int | None, allow_none: bool = False) -> int | None:
    """``value`` if it is an integer ≥ 0."""
    if value is None and allow_none:
        return None
    if value is None or int(value) != value or value < 0:
        raise CliError(flag, value, "must be 0 or a positive whole number")
    return int(value)


def int_in_range(flag: str, value: int, low: int | None = None, high: int | None = None,
                 fix: str | None = None) -> int:
    """``value`` if ``low <= value <= high`` (either bound may be ``None``)."""
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            problem = f"must be between {low} and {high}"
        elif low is not None:
            problem = f"must be at least {low}"
        else:
            problem = f"must be at most {high}"
        raise CliError(flag, value, problem, fix)
    return int(value)


def positive_float(flag: str, value: float) -> float:
    """``value`` if it is a finite number > 0."""
    if not (value == value and 0 < value < float("inf")):
        raise CliError(flag, value, "must be a positive number")
    return float(value)


def resolution(flag: str, value: int) -> int:
    """A processing size: a shorter side in pixels (≥ 16), or -1 for the original size."""
    if value == -1:
        return -1
    if value < 16:
        raise CliError(flag, value, "give the shorter side in pixels (at least 16, e.g. 480)",
                       "or -1 to keep the original size")
    return int(value)


# ------------------------------------------------------------------------------------------ device
def device(flag: str, spec: str | None):
    """``torch.device`` for ``spec`` (auto/cpu/cuda/cuda:N) via :func:`util.precision.resolve_device`."""
    from util.precision import resolve_device
    try:
        return resolve_device(spec)
    except ValueError as e:
        problem, _, fix = str(e).partition("; ")
        raise CliError(flag, spec, problem, fix or None) from None


# ------------------------------------------------------------------------------------------- paths
def _abs(path: str | os.PathLike) -> Path:
    """Absolute, symlinks resolved where they exist (so two spellings of one file compare equal)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def input_file(flag: str, path: str | os.PathLike | None, what: str = "file",
               fix: str | None = None) -> Path:
    """An existing, readable regular file."""
    if path is None or str(path) == "":
        raise CliError(flag, path, f"no {what} given", fix)
    p = Path(path).expanduser()
    if p.is_dir():
        raise CliError(flag, path, "is a folder, not a file", fix or f"give the {what} itself")
    if not p.is_file():
        raise CliError(flag, path, f"{what} not found", fix or "check the path")
    if not os.access(p, os.R_OK):
        raise CliError(flag, path, f"{what} is not readable (permission denied)", fix or "fix its permissions")
    return p


def input_dir(flag: str, path: str | os.PathLike | None, what: str = "folder",
              fix: str | None = None) -> Path:
    """An existing, readable folder."""
    if path is None or str(path) == "":
        raise CliError(flag, path, f"no {what} given", fix)
    p = Path(path).expanduser()
    if p.is_file():
        raise CliError(flag, path, "is a file, not a folder", fix or f"give the {what}")
    if not p.is_dir():
        raise CliError(flag, path, f"{what} not found", fix or "check the path")
    if not os.access(p, os.R_OK | os.X_OK):
        raise CliError(flag, path, f"{what} is not readable (permission denied)", fix or "fix its permissions")
    return p


def _blocking_file(p: Path) -> Path | None:
    """The first existing non-folder on the way to ``p`` (``p`` itself included), if any."""
    for anc in [*reversed(p.parents), p]:
        if anc.exists() and not anc.is_dir():
            return anc
        if not anc.exists():
            return None
    return None


def _check_not_inputs(flag: str, path: str | os.PathLike, out: Path,
                      inputs: Mapping[str, str | os.PathLike | Iterable | None], is_dir: bool) -> None:
    for in_flag, values in inputs.items():
        if values is None:
            continue
        for value in (values if isinstance(values, (list, tuple, set)) else [values]):
            if value is None or str(value) == "":
                continue
            src = _abs(value)
            if out == src:
                raise CliError(flag, path, f"is the same path as {in_flag} {value}",
                               "choose another output so the input is not overwritten")
            if is_dir and _within(src, out):
                raise CliError(flag, path, f"contains the input {in_flag} {value}",
                               "choose an output folder that holds none of the inputs")
            if _within(out, src):
                raise CliError(flag, path, f"lies inside the input {in_flag} {value}",
                               "choose an output outside the input data")


def output_dir(flag: str, path: str | os.PathLike | None,
               inputs: Mapping[str, str | os.PathLike | Iterable | None] | None = None,
               create: bool = True) -> Path:
    """A folder the run may write into: not a file, not under a file, not one of ``inputs`` (nor
    containing or inside one), writable; created now (``create``) so a bad path fails before any work."""
    if path is None or str(path) == "":
        raise CliError(flag, path, "no output folder given")
    p = Path(path).expanduser()
    blocker = _blocking_file(p)
    if blocker is not None:
        if blocker == p:
            raise CliError(flag, path, "is an existing file, not a folder",
                           "give a folder name (the file is left as it is)")
        raise CliError(flag, path, f"cannot be created: {blocker} is a file", "choose a folder outside it")
    _check_not_inputs(flag, path, _abs(p), inputs or {}, is_dir=True)
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(flag, path, f"cannot create the folder ({e.strerror or type(e).__name__})",
                           "choose a writable location") from None
        if not os.access(p, os.W_OK | os.X_OK):
            raise CliError(flag, path, "folder is not writable (permission denied)", "choose a writable folder")
    return p


def output_file(flag: str, path: str | os.PathLike | None,
                inputs: Mapping[str, str | os.PathLike | Iterable | None] | None = None,
                suffixes: tuple[str, ...] = (), create_parent: bool = True) -> Path:
    """A file the run may (over)write: not a folder, not under a file, not one of ``inputs`` (nor inside
    an input folder), with one of ``suffixes`` if given; its folder is created now."""
    if path is None or str(path) == "":
        raise CliError(flag, path, "no output file given")
    p = Path(path).expanduser()
    if suffixes and p.suffix.lower() not in suffixes:
        raise CliError(flag, path, f"must end in {' or '.join(suffixes)}", f"e.g. {p.stem or 'out'}{suffixes[0]}")
    if p.is_dir():
        raise CliError(flag, path, "is a folder, not a file name", "give a file name")
    blocker = _blocking_file(p.parent)
    if blocker is not None:
        raise CliError(flag, path, f"cannot be created: {blocker} is a file", "choose a path outside it")
    _check_not_inputs(flag, path, _abs(p), inputs or {}, is_dir=False)
    if create_parent:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(flag, path, f"cannot create its folder ({e.strerror or type(e).__name__})",
                           "choose a writable location") from None
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise CliError(flag, path, "its folder is not writable (permission denied)", "choose a writable folder")
    return p
