"""The one downloader of the project (weights, datasets, BL30K).

Every download goes to ``<target>.part`` next to the target and is renamed onto the final name only
once it is complete and (when an MD5 is known) verified, so an interrupted or corrupt download never
sits under the final name. Plain HTTP(S) URLs resume through ``Range`` requests; Google-Drive links
go through ``gdown`` (which resumes on its own). A dead link or a missing connection raises a
one-line :class:`DownloadError` that names the manual mirrors.

Also here: MD5 of a file, the free-disk check, the licence prompt, and archive extraction into a
target layout (zip/tar, extracted into a staging folder and then merged, so a half-extracted archive
never looks finished).
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

CHUNK_BYTES = 1 << 20
USER_AGENT = "FasterMiVOS-downloader/1.0"

# Spec §6.4: where to fetch things by hand when the scripted links are dead.
MIRRORS_MODELS = ("Google Drive / OneDrive mirror of the MiVOS and S2M weights: "
                  "https://hkustconnect-my.sharepoint.com/:f:/g/personal/hkchengad_connect_ust_hk/"
                  "EjHifAlvYUFPlEG2qBr-GGQBb1XyzxUvizJiQKBf8te2Cw?e=a6mxKz ; propagation model (s012): "
                  "https://drive.google.com/file/d/19dfbVDndFkboGLHESi8DGtuxF1B21Nm8/view?usp=sharing "
                  "(OneDrive https://1drv.ms/u/s!AjSBKkdpxQckyx23RL_sYrNPSDd4?e=3kDZSy)")
MIRRORS_DATASETS = ("Google Drive folder https://drive.google.com/drive/folders/1hEczGHw7qcMScbCJukZsoOW4Q9byx16A"
                    "?usp=sharing ; DAVIS https://davischallenge.org/ ; YouTube-VOS https://youtube-vos.org ; "
                    "static sets https://drive.google.com/file/d/1wUJq3HcLdN-z1t4CsUhjeZ9BVDb9YKLd/view?usp=sharing")
MIRRORS_BL30K = ("Google Drive https://drive.google.com/drive/folders/1KxriFZM8Y_-KbiA3D0PaMv6LQaatKFH-?usp=sharing ; "
                 "OneDrive https://uillinoisedu-my.sharepoint.com/:f:/g/personal/hokeikc2_illinois_edu/"
                 "ElEqJXQqaqZAqG8QROa0VesBAw4FiOl5wleP2iq_KXDPyw?e=eKMSbx ; UST mirror "
                 "http://ckcpu1.cse.ust.hk:8080/MiVOS/BL30K_{a-f}.tar (use --mirror http://ckcpu1.cse.ust.hk:8080/MiVOS) ; "
                 "Illinois Data Bank https://doi.org/10.13012/B2IDB-1702934_V1")


class DownloadError(RuntimeError):
    """A download failed (dead link, offline, interrupted, no space). The message is one line."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the published MD5."""


@dataclass(frozen=True)
class Source:
    """One downloadable file.

    ``url``: an http(s) URL or a Google-Drive link (``https://drive.google.com/uc?id=<id>``).
    ``filename``: the name the file is stored under (and looked up under on a ``--mirror``).
    ``md5``: published checksum (verified when given). ``size``: approximate bytes, for the disk check.
    """
    url: str
    filename: str
    md5: str | None = None
    size: int | None = None


def with_mirror(sources: dict[str, Source], mirror: str | None) -> dict[str, Source]:
    """Point every source at ``<mirror>/<filename>`` (a local server, the UST mirror, a copy on disk
    served over HTTP). ``None`` keeps the official URLs."""
    if not mirror:
        return dict(sources)
    base = mirror.rstrip("/")
    return {k: replace(s, url=f"{base}/{urllib.parse.quote(s.filename)}") for k, s in sources.items()}


_DRIVE_PATTERNS = (re.compile(r"drive\.google\.com/uc\?(?:.*&)?id=([\w-]+)"),
                   re.compile(r"drive\.google\.com/file/d/([\w-]+)"),
                   re.compile(r"drive\.google\.com/open\?id=([\w-]+)"))


def drive_id(url: str) -> str | None:
    """The Google-Drive file id of ``url``, or None for other URLs."""
    for pat in _DRIVE_PATTERNS:
        m = pat.search(url)
        if m:
            return m.group(1)
    return None


def file_md5(path: str | os.PathLike, chunk: int = CHUNK_BYTES) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def check_free_space(folder: str | os.PathLike, needed_bytes: int, what: str = "the download") -> None:
    """Raise :class:`DownloadError` if the file system holding ``folder`` has less than ``needed_bytes`` free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise DownloadError(f"{folder}: {human_bytes(free)} free but {what} needs about {human_bytes(needed_bytes)}; "
                            f"free some space or choose another folder (--root/--output)")


def confirm_licence(text: str, assume_yes: bool, stream=sys.stdin) -> None:
    """Print ``text`` and ask for ``y``; ``assume_yes`` (``--yes``) skips the question.

    Raises :class:`DownloadError` when the user declines or nobody can answer (no terminal)."""
    print(text)
    if assume_yes:
        print("Licence accepted with --yes.")
        return
    print("Type 'y' and press Enter to accept and continue: ", end="", flush=True)
    answer = stream.readline()
    if not answer:
        raise DownloadError("no answer to the licence question (stdin closed); pass --yes to accept it non-interactively")
    if answer.strip().lower() not in ("y", "yes"):
        raise DownloadError("licence not accepted; nothing was downloaded")


RESUME_HINT = "error: interrupted; run the same command again to resume"


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _dead_link(url: str, dest: Path, reason: str, mirrors: str) -> DownloadError:
    return DownloadError(f"cannot download {url} ({reason}); fetch it by hand and save it as {dest} — "
                         f"manual mirrors: {mirrors}")


def _progress_bar(total: int | None, start: int, label: str, quiet: bool):
    if quiet:
        return None
    import progressbar
    widgets = [f"{label}: ", progressbar.DataSize(), " ",
               progressbar.Percentage() if total else progressbar.AnimatedMarker(), " ",
               progressbar.Bar() if total else "", " ", progressbar.FileTransferSpeed(), " ",
               progressbar.ETA() if total else progressbar.Timer()]
    bar = progressbar.ProgressBar(max_value=total if total else progressbar.UnknownLength,
                                  widgets=widgets, fd=sys.stderr, initial_value=start)
    bar.start()
    bar.update(start, force=True)  # a resumed download starts where the .part ends
    return bar


def _http_fetch(url: str, part: Path, *, timeout: float, quiet: bool, label: str, hasher) -> None:
    """One attempt: append the missing bytes of ``url`` to ``part`` (Range request when it exists).

    ``hasher`` already holds the MD5 state of the bytes in ``part``; it is updated with what is appended.
    Raises ``_Interrupted`` when the connection drops, ``DownloadError`` for HTTP errors."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # the .part already holds the whole file (the server has nothing past its end)
            return
        raise
    with contextlib.closing(resp):
        if have and resp.status != 206:
            # the server ignored the Range header: start again from byte 0
            have = 0
            part.unlink(missing_ok=True)
            hasher.reset()
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        total = have + remaining if remaining is not None else None
        if remaining:
            check_free_space(part.parent, remaining, f"{part.name[:-5]} ({human_bytes(total)})")
        bar = _progress_bar(total, have, label, quiet)
        got = 0
        finished = False
        try:
            with open(part, "ab") as f:
                while True:
                    try:
                        block = resp.read(CHUNK_BYTES)
                    except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
                        if isinstance(e, http.client.IncompleteRead) and e.partial:
                            f.write(e.partial)
                            hasher.update(e.partial)
                        raise _Interrupted(_first_line(e)) from None
                    if not block:
                        break
                    f.write(block)
                    hasher.update(block)
                    got += len(block)
                    if bar is not None:
                        bar.update(min(have + got, total) if total else have + got)
            finished = remaining is None or got >= remaining
        finally:
            if bar is not None:
                with contextlib.suppress(Exception):
                    bar.finish(dirty=not finished)
        if remaining is not None and got < remaining:
            raise _Interrupted(f"connection closed after {got} of {remaining} bytes")


class _Interrupted(Exception):
    pass


class _Hasher:
    """An MD5 that can be reset (hashlib objects cannot)."""

    def __init__(self) -> None:
        self.h = hashlib.md5()

    def reset(self) -> None:
        self.h = hashlib.md5()

    def update(self, data: bytes) -> None:
        self.h.update(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _gdown_fetch(file_id: str, part: Path, *, quiet: bool) -> None:
    """Fetch a Google-Drive file into ``part`` with gdown.

    gdown keeps its own partial file (``<name>.gdownXXXXXXXX.part``, resumed with ``resume=True``)
    and moves it onto ``<name>.gdown`` only when complete, so a ``.part`` left by an interrupted
    plain-HTTP attempt (e.g. from a ``--mirror``) is never mistaken for a finished Drive download."""
    try:
        import gdown
    except ImportError:  # pragma: no cover - gdown is in requirements.txt
        raise DownloadError("gdown is not installed; run `pip install gdown`") from None
    finished = part.with_name(part.name[:-len(".part")] + ".gdown")
    if not finished.exists():
        result = gdown.download(id=file_id, output=str(finished), quiet=quiet, resume=True)
        if result is None or not finished.exists():
            raise DownloadError(f"gdown returned no file for Drive id {file_id}")
    os.replace(finished, part)


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, retries: int = 3,
             timeout: float = 60.0, quiet: bool = False, mirrors: str = MIRRORS_DATASETS,
             label: str | None = None) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify ``md5``, rename into place.

    A dropped connection is retried ``retries`` times, each time resuming where it stopped; when
    the retries are used up the ``.part`` stays for the next run and :class:`DownloadError` is
    raised. An MD5 mismatch deletes the ``.part`` and raises :class:`ChecksumError`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    label = label or dest.name
    fid = drive_id(url)
    try:
        if fid is not None:
            _gdown_fetch(fid, part, quiet=quiet)
            digest = file_md5(part) if md5 else None
        else:
            hasher = _Hasher()
            if part.exists() and md5:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                        hasher.update(block)
            attempt = 0
            while True:
                try:
                    _http_fetch(url, part, timeout=timeout, quiet=quiet, label=label, hasher=hasher)
                    break
                except _Interrupted as e:
                    attempt += 1
                    if attempt > retries:
                        size = part.stat().st_size if part.exists() else 0
                        raise DownloadError(f"download of {url} interrupted ({e}); {human_bytes(size)} kept in "
                                            f"{part}, run the same command again to resume") from None
                    if not quiet:
                        print(f"{label}: connection dropped ({e}), resuming (attempt {attempt}/{retries})",
                              file=sys.stderr)
            digest = hasher.hexdigest() if md5 else None
    except DownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise _dead_link(url, dest, f"HTTP {e.code} {e.reason}", mirrors) from None
    except urllib.error.URLError as e:
        raise _dead_link(url, dest, f"offline or host unreachable: {_first_line(e.reason if e.reason else e)}",
                         mirrors) from None
    except (OSError, http.client.HTTPException) as e:
        raise _dead_link(url, dest, _first_line(e), mirrors) from None
    except Exception as e:  # gdown raises its own exception types (and requests'), all mean the same here
        raise _dead_link(url, dest, f"{type(e).__name__}: {_first_line(e)}", mirrors) from None
    if md5 and digest != md5.lower():
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{dest.name}: MD5 {digest} does not match the published {md5.lower()} "
                            f"(corrupt or wrong file, deleted); run again to download it afresh or fetch it "
                            f"by hand: {mirrors}")
    os.replace(part, dest)
    return dest


def fetch(source: Source, dest: str | os.PathLike, *, mirrors: str, quiet: bool = False,
          retries: int = 3, verify_existing: bool = True) -> Path:
    """Download ``source`` to ``dest`` unless ``dest`` already exists (and matches its MD5)."""
    dest = Path(dest)
    if dest.is_file():
        if not source.md5 or not verify_existing or file_md5(dest) == source.md5.lower():
            return dest
        if not quiet:
            print(f"{dest}: MD5 does not match the published one; downloading it again", file=sys.stderr)
        dest.unlink()
    return download(source.url, dest, md5=source.md5, quiet=quiet, retries=retries, mirrors=mirrors,
                    label=source.filename)


# ---------------------------------------------------------------- extraction

def _safe_members_tar(tf: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = []
    for m in tf.getmembers():
        name = m.name
        if name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise DownloadError(f"{archive}: unsafe member path {name!r}; refusing to extract")
        if m.issym() or m.islnk():
            target = m.linkname
            if target.startswith("/") or ".." in Path(target).parts:
                raise DownloadError(f"{archive}: unsafe link {name!r} -> {target!r}; refusing to extract")
        if m.isdev():
            continue
        members.append(m)
    return members


def extract_archive(archive: str | os.PathLike, into: str | os.PathLike) -> Path:
    """Extract a zip or tar (any compression) into the folder ``into`` (created). Member paths that
    would escape ``into`` are refused."""
    archive, into = Path(archive), Path(into)
    into.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if name.startswith(("/", "\\")) or ".." in Path(name).parts:
                        raise DownloadError(f"{archive}: unsafe member path {name!r}; refusing to extract")
                zf.extractall(into)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = _safe_members_tar(tf, archive)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(into, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tf.extractall(into, members=members)
        else:
            raise DownloadError(f"{archive}: neither a zip nor a tar archive (truncated download?); delete it and "
                                f"run again")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise DownloadError(f"{archive}: corrupt archive ({_first_line(e)}); delete it and run again") from None
    return into


def merge_tree(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move everything in folder ``src`` into folder ``dst`` (folders merged recursively, files
    replaced), then remove ``src``. Moves are renames, so merging on one file system is instant."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir():
            merge_tree(entry, target)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
    src.rmdir()
    return dst


def staging_dir(parent: str | os.PathLike, name: str) -> Path:
    """An empty hidden folder ``parent/.extract-<name>`` (what a crashed extraction left is removed)."""
    path = Path(parent) / f".extract-{name}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def find_dir_with(root: str | os.PathLike, children: Sequence[str], max_depth: int = 3) -> Path | None:
    """The shallowest folder under ``root`` (``root`` included) that holds all ``children``."""
    level: list[Path] = [Path(root)]
    for _ in range(max_depth + 1):
        for d in level:
            if all((d / c).is_dir() for c in children):
                return d
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir()]
    return None


def select_parts(available: Iterable[str], only: Sequence[str] | None, what: str = "--only") -> list[str]:
    """Validate ``--only`` against the table's names (keeping the table order)."""
    available = list(available)
    if not only:
        return available
    unknown = [o for o in only if o not in available]
    if unknown:
        raise DownloadError(f"{what}: unknown part(s) {', '.join(unknown)}; choose from {', '.join(available)}")
    return [a for a in available if a in only]


# ---------------------------------------------------------------- archive parts (datasets, BL30K)

@dataclass(frozen=True)
class ArchivePart:
    """One archive of a dataset and where its content goes (paths relative to the data root).

    ``archive``: where the download is stored while it is extracted (deleted afterwards unless kept).
    ``target``: the folder the content is merged into.
    ``inner``: merge only this top-level folder of the archive into ``target`` (e.g. DAVIS zips hold
    a ``DAVIS`` folder that becomes ``2016`` / ``trainval`` / ``test-dev``); None merges everything.
    ``layout``: sub-folders to look for (at any depth ≤ 3) and merge into ``target/<name>``, e.g.
    ``("JPEGImages", "Annotations")`` for BL30K segments.
    """
    name: str
    source: Source
    archive: str
    target: str
    inner: str | None = None
    layout: tuple[str, ...] = ()

    def marker(self, root: Path) -> Path:
        return Path(root) / self.target / f".{self.name}.done"

    def is_done(self, root: Path) -> bool:
        return self.marker(root).is_file()


def install_part(part: ArchivePart, root: str | os.PathLike, *, mirrors: str, keep_archive: bool = False,
                 quiet: bool = False, retries: int = 3) -> str:
    """Download (resuming), verify, extract and merge one archive; returns 'skipped' or 'installed'.

    Idempotent: a finished part leaves ``<target>/.<name>.done`` and is skipped next time; a
    finished download whose extraction was interrupted is extracted again without downloading."""
    root = Path(root)
    if part.is_done(root):
        return "skipped"
    archive = root / part.archive
    fetch(part.source, archive, mirrors=mirrors, quiet=quiet, retries=retries)
    if not quiet:
        print(f"{part.name}: extracting {archive.name}", file=sys.stderr)
    stage = staging_dir(archive.parent, part.name)
    extract_archive(archive, stage)
    target = root / part.target
    if part.inner is not None:
        src = stage / part.inner
        if not src.is_dir():
            found = ", ".join(sorted(p.name for p in stage.iterdir())) or "nothing"
            shutil.rmtree(stage, ignore_errors=True)
            raise DownloadError(f"{archive}: expected a top-level folder {part.inner!r} but found {found}; "
                                f"is it the right archive?")
        merge_tree(src, target)
    elif part.layout:
        src = find_dir_with(stage, part.layout)
        if src is None:
            shutil.rmtree(stage, ignore_errors=True)
            raise DownloadError(f"{archive}: no folder holding {' and '.join(part.layout)} inside; "
                                f"is it the right archive?")
        for sub in part.layout:
            merge_tree(src / sub, target / sub)
    else:
        merge_tree(stage, target)
        stage = None
    if stage is not None:
        shutil.rmtree(stage, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    part.marker(root).write_text(f"{part.source.filename}\n")
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return "installed"
