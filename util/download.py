"""The one downloader of the project (weights, datasets, BL30K).

Every download goes to ``<target>.part`` next to the target and is renamed onto the final name only
once it is complete and (when an MD5 is known) verified, so an interrupted or corrupt download never
sits under the final name. Plain HTTP(S) URLs resume through ``Range`` requests; Google-Drive links
go through ``gdown`` (which resumes on its own). A dead link or a missing connection raises a
one-line :class:`DownloadError` that names the manual mirrors.

A download is accepted only once it is what it claims to be: the MD5 when one is published, else a
``validate`` check (archives are read through, the example video must decode); a file that fails is
deleted (a fresh download) or moved aside to ``<name>.invalid`` (a file found under the final name), and
the message says so. An HTML page served in place of a file (login, quota or error pages) is refused
before anything is written.

Also here: MD5 of a file, the free-disk check, the licence prompt, and archive extraction into a
target layout (zip/tar, extracted into a staging folder and then merged, so a half-extracted archive
never looks finished).
"""
from __future__ import annotations

import contextlib
import errno
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
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

CHUNK_BYTES = 1 << 20
USER_AGENT = "FasterMiVOS-downloader/1.0"

# Where to fetch things by hand when the scripted links are dead (the original READMEs' mirrors).
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


class ArchiveError(DownloadError):
    """An archive is damaged or not an archive (found while extracting)."""


@dataclass(frozen=True)
class Source:
    """One downloadable file.

    ``url``: an http(s) URL or a Google-Drive link (``https://drive.google.com/uc?id=<id>``).
    ``filename``: the name the file is stored under (and looked up under on a ``--mirror``).
    ``md5``: published checksum (verified when given). ``size``: approximate bytes, for the disk check.
    ``mirror``: the ``--mirror`` base URL this source was pointed at (named in error messages).
    """
    url: str
    filename: str
    md5: str | None = None
    size: int | None = None
    mirror: str | None = None


def with_mirror(sources: dict[str, Source], mirror: str | None) -> dict[str, Source]:
    """Point every source at ``<mirror>/<filename>`` (a local server, the UST mirror, a copy on disk
    served over HTTP). ``None`` keeps the official URLs. Raises :class:`DownloadError` for a mirror that
    is not an http(s) URL."""
    if not mirror:
        return dict(sources)
    if urllib.parse.urlsplit(mirror).scheme.lower() not in ("http", "https") or not urllib.parse.urlsplit(mirror).netloc:
        raise DownloadError(f"--mirror {mirror}: not an http(s) base URL; give e.g. http://host/path (serve a local "
                            f"folder with `python -m http.server`)")
    base = mirror.rstrip("/")
    return {k: replace(s, url=f"{base}/{urllib.parse.quote(s.filename)}", mirror=mirror) for k, s in sources.items()}


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


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _free_bytes(folder: Path) -> int:
    with contextlib.suppress(OSError):
        return shutil.disk_usage(folder).free
    return 0


def write_error(path: str | os.PathLike, e: OSError, resume: bool = True) -> DownloadError | None:
    """A one-line :class:`DownloadError` for a disk-full or permission error while writing ``path``
    (None for other errors)."""
    path = Path(path)
    if e.errno in _DISK_FULL:
        again = "run the same command again to resume" if resume else "run the same command again"
        return DownloadError(f"{path}: disk full ({human_bytes(_free_bytes(path.parent))} free); free some space "
                             f"and {again}")
    if e.errno in _NOT_WRITABLE:
        return DownloadError(f"{path}: cannot write there ({e.strerror}); choose a folder you can write to")
    return None


def check_folder(path: str | os.PathLike, flag: str) -> Path:
    """Check, before anything starts, that the output folder of ``flag`` (``--output``, ``--root``) is a
    folder or can be created as one, and is writable (nothing is created here). Raises
    :class:`DownloadError` ``"<flag> <path>: what is wrong; what to do"``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DownloadError(f"{flag} {path}: is a file, not a folder; give a folder")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise DownloadError(f"{flag} {path}: {probe} is a file, so this folder cannot be created; give another folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "this folder" if probe == path else f"{probe} (where it would be created)"
        raise DownloadError(f"{flag} {path}: {what} is not writable; give a folder you can write to")
    return path


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


def _dead_link(url: str, dest: Path, reason: str, mirrors: str, mirror: str | None = None) -> DownloadError:
    if mirror:
        return DownloadError(f"--mirror {mirror}: cannot download {url} ({reason}); check that the mirror serves "
                             f"{dest.name}, or leave out --mirror to use the official links")
    return DownloadError(f"cannot download {url} ({reason}); fetch it by hand and save it as {dest} — "
                         f"manual mirrors: {mirrors}")


def _looks_like_html(head: bytes) -> bool:
    h = head.lstrip()[:64].lower()
    return h.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) and b"html" in head[:1024].lower()


class _HtmlPage(Exception):
    """The server answered an HTML page (``Content-Type``) instead of the file."""


def _content_range(headers) -> tuple[int | None, int | None]:
    """(first byte, total size) of a ``Content-Range`` header; None where absent or ``*``."""
    m = re.fullmatch(r"bytes\s+(\d+|\*)(?:-\d+)?/(\d+|\*)", (headers.get("Content-Range") or "").strip())
    if not m:
        return None, None
    return (int(m.group(1)) if m.group(1) != "*" else None), (int(m.group(2)) if m.group(2) != "*" else None)


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


def _http_fetch(url: str, part: Path, *, timeout: float, quiet: bool, label: str, hasher,
                accept_html: bool = False) -> None:
    """One attempt: append the missing bytes of ``url`` to ``part`` (Range request when it exists).

    ``hasher`` already holds the MD5 state of the bytes in ``part``; it is updated with what is appended.
    Raises ``_Interrupted`` when the connection drops (its message counts the bytes of the whole file),
    ``_HtmlPage`` for an HTML answer (unless ``accept_html``), ``HTTPError`` for HTTP errors and
    ``DownloadError`` when the disk is full or not writable."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            _, size = _content_range(e.headers)
            if size is None or size == have:
                # the .part already holds the whole file (the server has nothing past its end)
                return
            # the .part is longer than the file on the server: it is not this file; start again
            part.unlink(missing_ok=True)
            hasher.reset()
            return _http_fetch(url, part, timeout=timeout, quiet=quiet, label=label, hasher=hasher,
                               accept_html=accept_html)
        raise
    with contextlib.closing(resp):
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not accept_html and ctype in ("text/html", "application/xhtml+xml"):
            raise _HtmlPage(ctype)
        first, size = _content_range(resp.headers) if resp.status == 206 else (None, None)
        if have and resp.status == 206 and first is not None and first != have:
            # a range other than the one asked for: these bytes cannot be appended; start again from byte 0
            part.unlink(missing_ok=True)
            hasher.reset()
            resp.close()
            return _http_fetch(url, part, timeout=timeout, quiet=quiet, label=label, hasher=hasher,
                               accept_html=accept_html)
        if have and resp.status != 206:
            # the server ignored the Range header: start again from byte 0
            have = 0
            part.unlink(missing_ok=True)
            hasher.reset()
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        total = have + remaining if remaining is not None else size
        if remaining:
            check_free_space(part.parent, remaining, f"{part.name[:-5]} ({human_bytes(total)})")
        bar = _progress_bar(total, have, label, quiet)
        got = 0
        finished = False

        def dropped(reason: str) -> _Interrupted:
            return _Interrupted(f"{reason}: connection closed at {have + got} of "
                                f"{total if total is not None else 'an unknown number of'} bytes")

        try:
            with open(part, "ab") as f:
                while True:
                    try:
                        block = resp.read(CHUNK_BYTES)
                    except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
                        if isinstance(e, http.client.IncompleteRead) and e.partial:
                            f.write(e.partial)
                            hasher.update(e.partial)
                            got += len(e.partial)
                        reason = "short read" if isinstance(e, http.client.IncompleteRead) else _first_line(e)
                        raise dropped(reason) from None
                    if not block:
                        break
                    f.write(block)
                    hasher.update(block)
                    got += len(block)
                    if bar is not None:
                        bar.update(min(have + got, total) if total else have + got)
            finished = remaining is None or got >= remaining
        except OSError as e:
            err = write_error(part, e)
            if err is not None:
                raise err from None
            raise
        finally:
            if bar is not None:
                with contextlib.suppress(Exception):
                    bar.finish(dirty=not finished)
        if remaining is not None and got < remaining:
            raise dropped("short read")


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
             label: str | None = None, final: str | os.PathLike | None = None,
             validate: Callable[[Path], None] | None = None, mirror: str | None = None) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, rename into place.

    A dropped connection is retried ``retries`` times, each time resuming where it stopped; when
    the retries are used up the ``.part`` stays for the next run and :class:`DownloadError` is
    raised (naming the ``.part`` and how many bytes of the whole file it holds). An MD5 mismatch deletes
    the ``.part`` and raises :class:`ChecksumError`. ``validate(path)`` raises ``ValueError`` with a
    reason ("is not a …") when the complete file is not usable: the ``.part`` is deleted and
    :class:`DownloadError` raised. ``final``: the name the file finally takes (when ``dest`` is a staging
    name), named in the messages; ``mirror``: the ``--mirror`` the URL comes from.
    """
    dest = Path(dest)
    final = Path(final) if final is not None else dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"{dest.parent}: cannot create the folder ({e.strerror or e}); choose a folder you "
                            f"can write to") from None
    part = part_path(dest)
    label = label or final.name
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
            accept_html = final.suffix.lower() in (".html", ".htm")
            while True:
                try:
                    _http_fetch(url, part, timeout=timeout, quiet=quiet, label=label, hasher=hasher,
                                accept_html=accept_html)
                    break
                except _Interrupted as e:
                    attempt += 1
                    if attempt > retries:
                        size = part.stat().st_size if part.exists() else 0
                        raise DownloadError(f"download of {url} interrupted ({e}); {size} bytes "
                                            f"({human_bytes(size)}) kept in {part}; run the same command again "
                                            f"to resume") from None
                    if not quiet:
                        print(f"{label}: connection dropped ({e}), resuming (attempt {attempt}/{retries})",
                              file=sys.stderr)
            digest = hasher.hexdigest() if md5 else None
    except DownloadError:
        raise
    except _HtmlPage as e:
        where = f"--mirror {mirror}: " if mirror else ""
        raise DownloadError(f"{where}{url} answered a web page ({e}) instead of {final.name} (a login, quota or "
                            f"error page; nothing was saved); fetch it by hand and save it as {final} — manual "
                            f"mirrors: {mirrors}") from None
    except urllib.error.HTTPError as e:
        raise _dead_link(url, final, f"HTTP {e.code} {e.reason}", mirrors, mirror) from None
    except urllib.error.URLError as e:
        raise _dead_link(url, final, f"offline or host unreachable: {_first_line(e.reason if e.reason else e)}",
                         mirrors, mirror) from None
    except OSError as e:
        err = write_error(part, e)
        if err is not None:
            raise err from None
        raise _dead_link(url, final, _first_line(e), mirrors, mirror) from None
    except http.client.HTTPException as e:
        raise _dead_link(url, final, _first_line(e), mirrors, mirror) from None
    except Exception as e:  # gdown raises its own exception types (and requests'), all mean the same here
        raise _dead_link(url, final, f"{type(e).__name__}: {_first_line(e)}", mirrors, mirror) from None
    if md5 and digest != md5.lower():
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{final.name}: MD5 {digest} does not match the published {md5.lower()} "
                            f"(corrupt or wrong file, deleted); run again to download it afresh or fetch it "
                            f"by hand: {mirrors}")
    if validate is not None:
        try:
            validate(part)
        except ValueError as e:
            part.unlink(missing_ok=True)
            if mirror:
                raise DownloadError(f"--mirror {mirror}: {final.name} from {url} {e} (deleted); check what the mirror "
                                    f"serves, or leave out --mirror to use the official links") from None
            raise DownloadError(f"{final.name} downloaded from {url} {e} (deleted); the link may serve an error page "
                                f"or another file — fetch it by hand and save it as {final}: {mirrors}") from None
    os.replace(part, dest)
    return dest


def fetch(source: Source, dest: str | os.PathLike, *, mirrors: str, quiet: bool = False,
          retries: int = 3, verify_existing: bool = True,
          validate: Callable[[Path], None] | None = None) -> Path:
    """Download ``source`` to ``dest`` unless ``dest`` already exists and passes its checks (the MD5,
    else ``validate``). A present file that fails ``validate`` is moved aside to ``<dest>.invalid`` (it
    may be a copy fetched by hand), one with the wrong MD5 is deleted; then it is downloaded again."""
    dest = Path(dest)
    if dest.is_file():
        if not verify_existing:
            return dest
        if source.md5:
            if file_md5(dest) == source.md5.lower():
                return dest
            if not quiet:
                print(f"{dest}: MD5 does not match the published one; deleted, downloading it again", file=sys.stderr)
            dest.unlink()
        elif validate is None:
            return dest
        else:
            try:
                validate(dest)
                return dest
            except ValueError as e:
                aside = dest.with_name(dest.name + ".invalid")
                os.replace(dest, aside)
                print(f"{dest}: present but {e}; moved to {aside.name}, downloading it again", file=sys.stderr)
    return download(source.url, dest, md5=source.md5, quiet=quiet, retries=retries, mirrors=mirrors,
                    label=source.filename, validate=None if source.md5 else validate, mirror=source.mirror)


def check_archive(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` ("is …", one line) unless ``path`` is a complete zip or tar archive: every
    member is read through (zip members against their CRC), so a truncated or damaged download is
    caught before it is accepted."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(1024)
    if _looks_like_html(head):
        raise ValueError("is a web page, not an archive")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                raise ValueError(f"is a damaged zip archive (member {bad!r} fails its CRC check)")
            return
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as tf:
                for member in tf:
                    if member.isfile():
                        data = tf.extractfile(member)
                        if data is not None:
                            while data.read(CHUNK_BYTES):
                                pass
                end = tf.offset
            compressed = head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00"))  # their streams catch truncation
            if not compressed:
                # a plain tar cut at a member boundary reads as a shorter archive: only the end-of-archive
                # marker (two zero blocks) shows it is complete
                with open(path, "rb") as f:
                    f.seek(end)
                    marker = f.read(2 * tarfile.BLOCKSIZE)
                if len(marker) < 2 * tarfile.BLOCKSIZE or marker.strip(b"\0"):
                    raise ValueError(f"is a truncated tar archive (no end-of-archive marker after "
                                     f"{end} bytes)")
            return
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise ValueError(f"is a damaged archive ({_first_line(e)})") from None
    raise ValueError(f"is neither a zip nor a tar archive ({len(head)} first bytes checked; truncated, or an "
                     f"error page?)" if len(head) else "is empty")


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
            raise ArchiveError(f"{archive}: neither a zip nor a tar archive (truncated download?); delete it and "
                               f"run again")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise ArchiveError(f"{archive}: corrupt archive ({_first_line(e)}); delete it and run again") from None
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
        raise DownloadError(f"{what} {' '.join(unknown)}: unknown part(s); choose from {', '.join(available)}")
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
    finished download whose extraction was interrupted is extracted again without downloading. Without
    a published MD5 the archive is read through before it is accepted (:func:`check_archive`); an
    archive that still fails to extract is moved aside to ``<archive>.invalid``."""
    root = Path(root)
    if part.is_done(root):
        return "skipped"
    archive = root / part.archive

    def check(path: Path) -> None:
        if not quiet:
            print(f"{part.name}: checking {archive.name}", file=sys.stderr)
        check_archive(path)

    fetch(part.source, archive, mirrors=mirrors, quiet=quiet, retries=retries, validate=check)
    if not quiet:
        print(f"{part.name}: extracting {archive.name}", file=sys.stderr)
    stage = staging_dir(archive.parent, part.name)
    target = root / part.target
    try:
        extract_archive(archive, stage)
        if part.inner is not None:
            src = stage / part.inner
            if not src.is_dir():
                found = ", ".join(sorted(p.name for p in stage.iterdir())) or "nothing"
                raise DownloadError(f"{archive}: expected a top-level folder {part.inner!r} but found {found}; "
                                    f"is it the right archive?")
            merge_tree(src, target)
        elif part.layout:
            src = find_dir_with(stage, part.layout)
            if src is None:
                raise DownloadError(f"{archive}: no folder holding {' and '.join(part.layout)} inside; "
                                    f"is it the right archive?")
            for sub in part.layout:
                merge_tree(src / sub, target / sub)
        else:
            merge_tree(stage, target)
        target.mkdir(parents=True, exist_ok=True)
        part.marker(root).write_text(f"{part.source.filename}\n")
    except ArchiveError as e:
        aside = archive.with_name(archive.name + ".invalid")
        with contextlib.suppress(OSError):
            os.replace(archive, aside)
        reason = str(e).split(": ", 1)[-1].split(";")[0]
        raise DownloadError(f"{archive}: {reason}; moved to {aside.name} — run the same command again to download "
                            f"it afresh") from None
    except OSError as e:
        reason = "disk full" if e.errno in _DISK_FULL else _first_line(e)
        raise DownloadError(f"{archive}: extraction into {target} failed ({reason}); the archive is kept — free "
                            f"some space or fix that, and run the same command again (it is extracted without "
                            f"downloading)") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return "installed"
