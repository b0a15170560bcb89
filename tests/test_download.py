"""Download logic against a real HTTP server on 127.0.0.1 (no other host is contacted)."""
from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import download_bl30k
import download_datasets
import download_model
from tests.helpers_http import FileServer
from util.download import (ChecksumError, DownloadError, check_free_space, confirm_licence, download,
                           drive_id, extract_archive, part_path, with_mirror)

ROOT = Path(__file__).resolve().parents[1]


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _png(arr: np.ndarray, palette: bool = False) -> bytes:
    im = Image.fromarray(arr)
    if palette:
        im = im.convert("P")
        im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


PAYLOAD = bytes(np.random.RandomState(0).randint(0, 256, 300_000, dtype=np.uint8))


# ---------------------------------------------------------------- the downloader

def test_drive_ids_are_recognised():
    assert drive_id("https://drive.google.com/uc?id=19dfbVDndFkboGLHESi8DGtuxF1B21Nm8") == \
        "19dfbVDndFkboGLHESi8DGtuxF1B21Nm8"
    assert drive_id("https://drive.google.com/file/d/1NF1APCxb9jzyDaEApHMN24aFPsqnYH6G/view?usp=sharing") == \
        "1NF1APCxb9jzyDaEApHMN24aFPsqnYH6G"
    assert drive_id("http://127.0.0.1:8000/x.pth") is None
    mirrored = with_mirror(download_model.MODELS, "http://127.0.0.1:1/m/")
    assert mirrored["fbrs"].url == "http://127.0.0.1:1/m/fbrs.pth"
    assert drive_id(mirrored["s2m"].url) is None


def test_download_writes_verified_file(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    out = download(server.url("/f.bin"), tmp_path / "f.bin", md5=_md5(PAYLOAD), quiet=True)
    assert out.read_bytes() == PAYLOAD
    assert not part_path(out).exists()


def test_resume_after_cut_connection(server, tmp_path):
    server.files["/big.bin"] = PAYLOAD
    server.cut_once.add("/big.bin")
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError) as e:
        download(server.url("/big.bin"), dest, md5=_md5(PAYLOAD), retries=0, quiet=True)
    assert "run the same command again to resume" in str(e.value) and "\n" not in str(e.value)
    part = part_path(dest)
    assert not dest.exists(), "a cut download must never sit under the final name"
    assert part.is_file() and 0 < part.stat().st_size < len(PAYLOAD)
    kept = part.stat().st_size
    assert part.read_bytes() == PAYLOAD[:kept]

    download(server.url("/big.bin"), dest, md5=_md5(PAYLOAD), retries=0, quiet=True)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    # the second run asked only for the missing bytes
    assert server.requests[-1] == ("/big.bin", f"bytes={kept}-")


def test_cut_connection_is_resumed_within_one_run(server, tmp_path):
    server.files["/r.bin"] = PAYLOAD
    server.cut_once.add("/r.bin")
    out = download(server.url("/r.bin"), tmp_path / "r.bin", md5=_md5(PAYLOAD), retries=2, quiet=True)
    assert out.read_bytes() == PAYLOAD
    assert server.count("/r.bin") == 2


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    server.files["/n.bin"] = PAYLOAD
    server.no_range.add("/n.bin")
    dest = tmp_path / "n.bin"
    part_path(dest).write_bytes(b"stale bytes that must not be kept")
    download(server.url("/n.bin"), dest, md5=_md5(PAYLOAD), quiet=True)
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_is_finished_without_refetching_bytes(server, tmp_path):
    server.files["/p.bin"] = PAYLOAD
    dest = tmp_path / "p.bin"
    part_path(dest).write_bytes(PAYLOAD)  # e.g. killed between the last byte and the rename
    download(server.url("/p.bin"), dest, md5=_md5(PAYLOAD), quiet=True)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/p.bin", f"bytes={len(PAYLOAD)}-")]  # answered 416, nothing re-sent


def test_md5_mismatch_is_reported_and_leaves_no_file(server, tmp_path):
    server.files["/bad.bin"] = PAYLOAD
    dest = tmp_path / "bad.bin"
    with pytest.raises(ChecksumError) as e:
        download(server.url("/bad.bin"), dest, md5="0" * 32, quiet=True)
    msg = str(e.value)
    assert "MD5" in msg and _md5(PAYLOAD) in msg and "0" * 32 in msg and "\n" not in msg
    assert not dest.exists() and not part_path(dest).exists()


def test_dead_link_and_offline_give_one_line_with_mirrors(server, tmp_path):
    dest = tmp_path / "x.pth"
    with pytest.raises(DownloadError) as e:
        download(server.url("/missing.pth"), dest, quiet=True, mirrors="MIRROR-LIST")
    assert "HTTP 404" in str(e.value) and "MIRROR-LIST" in str(e.value) and "\n" not in str(e.value)
    assert not dest.exists() and not part_path(dest).exists()

    with socket.socket() as s:  # a port nobody listens on: connection refused, like being offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as e:
        download(f"http://127.0.0.1:{port}/x.pth", dest, quiet=True, mirrors="MIRROR-LIST", timeout=5)
    assert "unreachable" in str(e.value) and "MIRROR-LIST" in str(e.value)
    assert not dest.exists()


def test_free_space_check_and_licence_prompt(tmp_path):
    check_free_space(tmp_path, 1)
    with pytest.raises(DownloadError, match="free"):
        check_free_space(tmp_path / "not" / "yet", 10**18)
    confirm_licence("L", assume_yes=True)
    confirm_licence("L", assume_yes=False, stream=io.StringIO("y\n"))
    with pytest.raises(DownloadError, match="not accepted"):
        confirm_licence("L", assume_yes=False, stream=io.StringIO("n\n"))
    with pytest.raises(DownloadError, match="--yes"):
        confirm_licence("L", assume_yes=False, stream=io.StringIO(""))


def test_unsafe_archive_members_are_refused(tmp_path):
    evil = tmp_path / "evil.tar"
    evil.write_bytes(_tar({"../outside.txt": b"x"}))
    with pytest.raises(DownloadError, match="unsafe"):
        extract_archive(evil, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(_zip({"a.txt": b"hello"})[:20])
    with pytest.raises(DownloadError):
        extract_archive(broken, tmp_path / "out2")


# ---------------------------------------------------------------- BL30K

def _bl30k_segment(videos: list[str], inner: str) -> bytes:
    files = {}
    for v in videos:
        for f in range(2):
            files[f"{inner}JPEGImages/{v}/{f:05d}.jpg"] = f"jpg {v} {f}".encode()
            files[f"{inner}Annotations/{v}/{f:05d}.png"] = f"png {v} {f}".encode()
    return _tar(files)


def test_bl30k_segments_merge_into_one_layout_and_rerun_is_idempotent(server, tmp_path):
    # segment a keeps its data under a top folder, segment b at the tar's root: both are found
    seg_a = _bl30k_segment(["a_000", "a_001"], "BL30K/")
    seg_b = _bl30k_segment(["b_000"], "")
    server.files["/BL30K_a.tar"] = seg_a
    server.files["/BL30K_b.tar"] = seg_b
    server.cut_once.add("/BL30K_b.tar")  # the flaky connection is retried within the run
    sources = with_mirror(download_bl30k.SOURCES, server.base)
    sources = {"a": replace(sources["a"], md5=_md5(seg_a), size=len(seg_a)),
               "b": replace(sources["b"], md5=_md5(seg_b), size=len(seg_b))}
    root = tmp_path / "data"
    status = download_bl30k.run(root, ["a", "b"], sources, quiet=True)
    assert status == {"BL30K_a": "installed", "BL30K_b": "installed"}
    bl = root / "BL30K"
    assert sorted(p.name for p in (bl / "JPEGImages").iterdir()) == ["a_000", "a_001", "b_000"]
    assert sorted(p.name for p in (bl / "Annotations").iterdir()) == ["a_000", "a_001", "b_000"]
    assert (bl / "JPEGImages" / "b_000" / "00001.jpg").read_bytes() == b"jpg b_000 1"
    assert sorted(p.name for p in bl.iterdir() if not p.name.startswith(".")) == ["Annotations", "JPEGImages"]
    assert not list(root.glob("*.tar")) and not list(root.glob("*.part")) and not list(root.glob(".extract-*"))

    n_requests = len(server.requests)
    assert download_bl30k.run(root, ["a", "b"], sources, quiet=True) == {"BL30K_a": "skipped", "BL30K_b": "skipped"}
    assert len(server.requests) == n_requests, "an idempotent re-run downloads nothing"


def test_bl30k_md5_mismatch_stops_before_extraction(server, tmp_path):
    seg = _bl30k_segment(["v"], "")
    server.files["/BL30K_c.tar"] = seg
    sources = {"c": replace(with_mirror(download_bl30k.SOURCES, server.base)["c"], size=len(seg))}
    # the official MD5 of BL30K_c cannot match our small tar
    with pytest.raises(ChecksumError, match="BL30K_c.tar"):
        download_bl30k.run(tmp_path, ["c"], sources, quiet=True)
    assert not (tmp_path / "BL30K" / "JPEGImages").exists()
    assert not (tmp_path / "BL30K_c.tar").exists() and not (tmp_path / "BL30K_c.tar.part").exists()


def test_bl30k_free_space_is_checked_before_anything_starts(server, tmp_path):
    sources = with_mirror(download_bl30k.SOURCES, server.base)  # official sizes: ~117 GB each
    sources = {k: replace(s, size=10**17) for k, s in sources.items()}
    with pytest.raises(DownloadError, match="free"):
        download_bl30k.run(tmp_path, list(sources), sources, quiet=True)
    assert server.requests == []


def test_bl30k_cli_reports_one_line_error(server, tmp_path, capsys):
    server.files["/BL30K_f.tar"] = b"not the real thing"
    rc = download_bl30k.main(["--root", str(tmp_path), "--only", "f", "--yes", "--mirror", server.base,
                              "--no_space_check", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error:") and "MD5" in err[0]
    assert download_bl30k.main(["--root", str(tmp_path), "--only", "z", "--yes"]) == 2


# ---------------------------------------------------------------- datasets

def _davis_zip(top: str, kind: str) -> bytes:
    files = {f"{top}/ImageSets/2017/{kind}.txt": b"bear\n"}
    if kind == "scribbles":
        files[f"{top}/Scribbles/bear/001.json"] = b"{}"
    else:
        files[f"{top}/JPEGImages/480p/bear/00000.jpg"] = kind.encode()
        files[f"{top}/Annotations/480p/bear/00000.png"] = kind.encode()
    return _zip(files)


def test_datasets_layout_renames_resize_and_idempotence(server, tmp_path, capsys):
    img = np.random.RandomState(1).randint(0, 256, (36, 64, 3), dtype=np.uint8)
    lab = np.zeros((36, 64), np.uint8)
    lab[10:20, 10:30] = 1
    lab[20:30, 40:60] = 2
    archives = {
        "static_data.zip": _zip({"fss/cat/1.jpg": b"j", "fss/cat/1.png": b"p", "ecssd/a.jpg": b"j"}),
        "DAVIS-data.zip": _davis_zip("DAVIS", "2016"),
        "DAVIS-2017-trainval-480p.zip": _davis_zip("DAVIS", "train"),
        "DAVIS-2017-scribbles-trainval.zip": _davis_zip("DAVIS", "scribbles"),
        "DAVIS-2017-test-dev-480p.zip": _davis_zip("DAVIS", "test-dev"),
        "train.zip": _zip({"train/JPEGImages/v1/00000.jpg": _png(img),
                           "train/Annotations/v1/00000.png": _png(lab, palette=True)}),
        "valid.zip": _zip({"valid/JPEGImages/v2/00000.jpg": b"j"}),
        "valid_all_frames.zip": _zip({"valid_all_frames/JPEGImages/v2/00000.jpg": b"j"}),
    }
    for name, data in archives.items():
        server.files["/" + name] = data
    root = tmp_path / "data"
    argv = ["--root", str(root), "--mirror", server.base, "--yes", "--quiet", "--processes", "1"]
    assert download_datasets.main(argv) == 0, capsys.readouterr().err

    assert (root / "static/fss/cat/1.png").is_file() and (root / "static/ecssd/a.jpg").is_file()
    assert (root / "DAVIS/2016/ImageSets/2017/2016.txt").is_file()
    tv = root / "DAVIS/2017/trainval"
    assert (tv / "JPEGImages/480p/bear/00000.jpg").read_bytes() == b"train"
    assert (tv / "Scribbles/bear/001.json").is_file(), "scribbles merge into trainval"
    assert (root / "DAVIS/2017/test-dev/JPEGImages/480p/bear/00000.jpg").read_bytes() == b"test-dev"
    assert not (root / "DAVIS/DAVIS").exists() and not (root / "DAVIS/2017/DAVIS").exists()
    assert (root / "YouTube/valid/JPEGImages/v2/00000.jpg").is_file()
    assert (root / "YouTube/all_frames/valid_all_frames/JPEGImages/v2/00000.jpg").is_file()
    assert not list(root.rglob("*.zip")), "archives are deleted after extraction"

    # resize: shorter side 480, bicubic image, nearest labels (no new label values)
    with Image.open(root / "YouTube/train_480p/JPEGImages/v1/00000.jpg") as im:
        assert im.size == (853, 480)
    with Image.open(root / "YouTube/train_480p/Annotations/v1/00000.png") as an:
        assert an.size == (853, 480) and an.mode == "P"
        assert set(np.unique(np.array(an)).tolist()) == {0, 1, 2}

    n = len(server.requests)
    assert download_datasets.main(argv) == 0
    assert len(server.requests) == n, "a re-run downloads nothing"
    out = capsys.readouterr().out
    assert out.count("skipped") >= len(archives) + 1


def test_datasets_unknown_part_and_missing_inner_folder(server, tmp_path, capsys):
    assert download_datasets.main(["--only", "nope", "--yes", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --only nope: unknown part")
    server.files["/DAVIS-data.zip"] = _zip({"Other/x.txt": b"x"})
    rc = download_datasets.main(["--root", str(tmp_path), "--mirror", server.base, "--yes", "--quiet",
                                 "--only", "davis2016"])
    err = capsys.readouterr().err
    assert rc == 1 and "'DAVIS'" in err and "Other" in err
    assert not (tmp_path / "DAVIS" / ".davis2016.done").exists()


# ---------------------------------------------------------------- download_model

def _ckpt_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.full((2, 2), float(seed))}, buf)
    return buf.getvalue()


def test_download_model_downloads_skips_and_replaces_broken(server, tmp_path, capsys):
    for i, src in enumerate(download_model.MODELS.values()):
        server.files["/" + src.filename] = _ckpt_bytes(i)
    server.files["/example.mp4"] = _mp4_bytes(tmp_path)
    saves = tmp_path / "saves"
    example = tmp_path / "example" / "example.mp4"
    argv = ["--output", str(saves), "--mirror", server.base, "--check", "read", "--quiet",
            "--example_output", str(example)]
    assert download_model.main(argv) == 0, capsys.readouterr().err
    for i, src in enumerate(download_model.MODELS.values()):
        assert (saves / src.filename).read_bytes() == _ckpt_bytes(i)
    assert example.read_bytes() == server.files["/example.mp4"]
    assert sorted(p.name for p in saves.iterdir()) == sorted(s.filename for s in download_model.MODELS.values())

    # present and loadable: skipped, nothing requested
    n = len(server.requests)
    assert download_model.main(argv) == 0
    assert len(server.requests) == n
    assert capsys.readouterr().out.count("skipped") == 5

    # a truncated file is downloaded again
    (saves / "s2m.pth").write_bytes(_ckpt_bytes(2)[:50])
    assert download_model.main(argv[:-2] + ["--only", "s2m", "--no_example"]) == 0
    assert (saves / "s2m.pth").read_bytes() == _ckpt_bytes(2)
    assert (saves / "s2m.pth.invalid").read_bytes() == _ckpt_bytes(2)[:50], "the broken file is kept aside"
    assert server.count("/s2m.pth") == 2 and server.count("/fusion.pth") == 1


def _mp4_bytes(tmp_path: Path) -> bytes:
    from dataset.synthetic import make_clip, write_video
    path = tmp_path / "clip_src.mp4"
    write_video(path, make_clip(num_frames=2, width=64, height=48, num_objects=1, seed=0).frames)
    data = path.read_bytes()
    path.unlink()
    return data


def test_download_model_rejects_a_file_that_is_not_a_checkpoint(server, tmp_path, capsys):
    server.files["/fusion.pth"] = b"<html>quota exceeded</html>"
    saves = tmp_path / "saves"
    rc = download_model.main(["--output", str(saves), "--mirror", server.base, "--check", "read", "--quiet",
                              "--only", "fusion.pth", "--no_example"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error:") and "not a usable fusion.pth" in err[0]
    assert not (saves / "fusion.pth").exists()
    assert not [p for p in saves.iterdir()], "no partial or staged file is left behind"


def test_download_model_full_check_uses_the_network_when_available(tmp_path):
    # without the network code (or with it) a random tiny state dict never passes the full check
    path = tmp_path / "fusion.pth"
    torch.save({"w": torch.zeros(1)}, path)
    assert download_model.check_checkpoint("fusion", path, full=False) == "state dict readable"
    try:
        how = download_model.check_checkpoint("fusion", path, full=True)
    except Exception as e:  # the network exists: the file does not fit it
        assert "FusionNet" in str(e) or "fusion" in str(e)
    else:
        assert how == "state dict readable (network code not available)"


@pytest.mark.parametrize("script", ["download_model.py", "download_datasets.py", "download_bl30k.py",
                                    "scripts/resize_youtube.py"])
def test_scripts_have_help(script):
    r = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr


def test_drive_links_go_through_gdown_with_resume(monkeypatch, tmp_path):
    import gdown
    calls = []

    def fake_download(*, id, output, quiet, resume):
        calls.append((id, output, resume))
        Path(output).write_bytes(PAYLOAD)  # gdown moves its finished partial file onto `output`
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    dest = tmp_path / "s2m.pth"
    src = download_model.MODELS["s2m"]
    part_path(dest).write_bytes(PAYLOAD[:10])  # left by an interrupted plain-HTTP attempt: not reused
    download(src.url, dest, md5=_md5(PAYLOAD), quiet=True)
    assert dest.read_bytes() == PAYLOAD and not part_path(dest).exists()
    assert calls == [("1HKwklVey3P2jmmdmrACFlkXtcvNxbKMM", str(tmp_path / "s2m.pth.gdown"), True)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s2m.pth"]

    def failing(**kwargs):
        raise gdown.exceptions.FileURLRetrievalError("Failed to retrieve file url:\n\n\tToo many users have viewed")

    monkeypatch.setattr(gdown, "download", failing)
    with pytest.raises(DownloadError) as e:
        download(src.url, tmp_path / "other.pth", quiet=True, mirrors="MIRRORS")
    msg = str(e.value)
    assert "\n" not in msg and "FileURLRetrievalError" in msg and "MIRRORS" in msg and "drive.google.com" in msg
    assert not (tmp_path / "other.pth").exists()


# ---------------------------------------------------------------- what a bad mirror or a bad disk does

def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_garbage_example_clip_is_refused_then_replaced(server, tmp_path, capsys):
    server.files["/example.mp4"] = b"<garbage from a broken mirror>" * 100
    example = tmp_path / "example" / "example.mp4"
    argv = ["--output", str(tmp_path / "saves"), "--mirror", server.base, "--quiet", "--only", "s2m",
            "--check", "read", "--example_output", str(example)]
    server.files["/s2m.pth"] = _ckpt_bytes(2)
    assert download_model.main(argv) == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"error: --mirror {server.base}: example.mp4 ") and "not a video" in err
    assert not example.exists() and not part_path(example).exists(), "nothing is accepted under the final name"

    # a bad clip already under the final name is not "done": moved aside and fetched again
    example.write_bytes(b"not a video")
    server.files["/example.mp4"] = _mp4_bytes(tmp_path)
    assert download_model.main(argv) == 0
    captured = capsys.readouterr()
    assert "moved to example.mp4.invalid" in captured.err
    assert example.read_bytes() == server.files["/example.mp4"]
    assert (example.parent / "example.mp4.invalid").read_bytes() == b"not a video"
    assert download_model.main(argv) == 0 and "decodes; skipped" in capsys.readouterr().out


def _damaged_zip() -> bytes:
    data = bytearray(_zip({"fss/cat/1.png": bytes(range(256)) * 40}))
    data[60:80] = b"\0" * 20   # inside the member's data: the CRC check fails
    return bytes(data)


def test_corrupt_dataset_zip_never_sits_under_its_final_name(server, tmp_path, capsys):
    server.files["/static_data.zip"] = _damaged_zip()
    root = tmp_path / "data"
    argv = ["--root", str(root), "--mirror", server.base, "--yes", "--quiet", "--only", "static"]
    assert download_datasets.main(argv) == 1
    err = _one_error_line(capsys)
    assert "static_data.zip" in err and "damaged" in err and "deleted" in err
    assert not (root / "static" / "static_data.zip").exists()
    assert not list(root.rglob(".extract-*")) and not list(root.rglob("*.part"))

    # a damaged archive found under the final name (e.g. copied by hand) is moved aside and fetched again
    (root / "static" / "static_data.zip").write_bytes(_damaged_zip())
    server.files["/static_data.zip"] = _zip({"fss/cat/1.png": b"p"})
    assert download_datasets.main(argv) == 0
    assert "moved to static_data.zip.invalid" in capsys.readouterr().err
    assert (root / "static" / "fss" / "cat" / "1.png").read_bytes() == b"p"
    assert (root / "static" / "static_data.zip.invalid").read_bytes() == _damaged_zip()


@pytest.mark.parametrize("cut", [2048, 2100])   # at a member boundary (reads as a shorter tar) / inside a member
def test_truncated_tar_is_refused(server, tmp_path, cut):
    seg = _bl30k_segment(["v"], "")
    server.files["/BL30K_a.tar"] = seg[:cut]   # the server itself holds a cut file
    sources = {"a": replace(with_mirror(download_bl30k.SOURCES, server.base)["a"], md5=None, size=1)}
    with pytest.raises(DownloadError, match="BL30K_a.tar .*(truncated|damaged|neither)"):
        download_bl30k.run(tmp_path, ["a"], sources, quiet=True)
    assert not (tmp_path / "BL30K_a.tar").exists() and not (tmp_path / "BL30K" / ".BL30K_a.done").exists()


def test_short_read_names_the_real_part_file_and_whole_file_bytes(server, tmp_path, capsys):
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(60_000)}, buf)
    data = buf.getvalue()
    total = len(data)
    server.files["/fusion.pth"] = data
    server.cut_at["/fusion.pth"] = [50_000, 120_000, 150_000, 170_000]   # four requests, each cut
    saves = tmp_path / "saves"
    argv = ["--output", str(saves), "--mirror", server.base, "--check", "read", "--quiet", "--only", "fusion",
            "--no_example"]
    assert download_model.main(argv) == 1
    err = _one_error_line(capsys)
    part = saves / "fusion.pth.new.part"
    assert part.stat().st_size == 170_000
    assert f"kept in {part};" in err, err
    assert f"at 170000 of {total} bytes" in err and "170000 bytes" in err
    assert "resume" in err
    # the next run resumes from the part and finishes
    assert download_model.main(argv) == 0
    assert (saves / "fusion.pth").read_bytes() == data and not part.exists()
    assert server.requests[-1] == ("/fusion.pth", "bytes=170000-")


def test_html_page_served_as_a_file_is_refused(server, tmp_path, capsys):
    server.files["/s2m.pth"] = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
    server.content_type["/s2m.pth"] = "text/html; charset=utf-8"
    saves = tmp_path / "saves"
    rc = download_model.main(["--output", str(saves), "--mirror", server.base, "--check", "read", "--quiet",
                              "--only", "s2m", "--no_example"])
    err = _one_error_line(capsys)
    assert rc == 1 and "web page" in err and "text/html" in err and err.startswith(f"error: --mirror {server.base}")
    assert not [p for p in saves.iterdir()], "nothing saved"


def test_part_longer_than_the_file_starts_again(server, tmp_path):
    server.files["/p.bin"] = PAYLOAD
    dest = tmp_path / "p.bin"
    part_path(dest).write_bytes(PAYLOAD + b"bytes of some other, longer file")
    download(server.url("/p.bin"), dest, md5=_md5(PAYLOAD), quiet=True)
    assert dest.read_bytes() == PAYLOAD


def test_disk_full_is_one_line_and_keeps_the_part(server, tmp_path, monkeypatch):
    import errno
    import util.download as dl
    server.files["/f.bin"] = PAYLOAD
    real_open = open

    class FullFile:
        def __init__(self, path, mode):
            self.f = real_open(path, mode)
            self.written = 0

        def write(self, data):
            if self.written + len(data) > 100_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return self.f.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(dl, "open", lambda path, mode="r", *a, **k: FullFile(path, mode) if mode == "ab"
                        else real_open(path, mode, *a, **k), raising=False)
    with pytest.raises(DownloadError) as e:
        download(server.url("/f.bin"), tmp_path / "f.bin", quiet=True)
    msg = str(e.value)
    assert "disk full" in msg and "f.bin.part" in msg and "resume" in msg and "\n" not in msg
    assert "cannot download" not in msg, "not reported as a dead link"


def test_bad_output_folders_and_mirror_are_refused_before_any_download(server, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (download_model.main, ["--output", str(afile / "saves"), "--mirror", server.base], "--output"),
        (download_model.main, ["--output", str(afile), "--mirror", server.base], "--output"),
        (download_model.main, ["--output", str(tmp_path / "s"), "--example_output", str(tmp_path)], "--example_output"),
        (download_model.main, ["--output", str(tmp_path / "s"), "--mirror", "/some/folder"], "--mirror"),
        (download_datasets.main, ["--root", str(afile / "d"), "--yes", "--mirror", server.base], "--root"),
        (download_datasets.main, ["--root", str(tmp_path / "d"), "--yes", "--processes", "0"], "--processes"),
        (download_bl30k.main, ["--root", str(afile), "--yes", "--mirror", server.base], "--root"),
        (download_bl30k.main, ["--root", str(tmp_path), "--yes", "--mirror", "ftp://x/y"], "--mirror"),
    ]
    for main, argv, flag in cases:
        assert main(argv + ["--quiet"]) == 2, argv
        assert _one_error_line(capsys).startswith(f"error: {flag} "), argv
    assert server.requests == [] and afile.read_text() == "x"
    assert not (tmp_path / "s").exists() and not (tmp_path / "d").exists()


def test_download_model_pretrained_fetches_the_imagenet_resnet_checked_strictly(server, tmp_path, capsys):
    """--pretrained adds the ImageNet ResNet-50 the trainers start from; it must load strictly into
    torchvision's ResNet-50 (a checkpoint of another network is refused, nothing kept)."""
    import torchvision
    src = download_model.PRETRAINED["resnet50"]
    saves = tmp_path / "saves"
    argv = ["--output", str(saves), "--mirror", server.base, "--quiet", "--no_example", "--only", "resnet50"]
    server.files["/" + src.filename] = _ckpt_bytes(7)
    assert download_model.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a usable resnet50-19c8e357.pth" in err[0] and "ResNet-50" in err[0]
    assert not (saves / src.filename).exists()

    buf = io.BytesIO()
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), buf)
    server.files["/" + src.filename] = buf.getvalue()
    assert download_model.main(argv) == 0, capsys.readouterr().err
    assert "loads into its network" in capsys.readouterr().out
    assert (saves / src.filename).read_bytes() == buf.getvalue()
    # the default download (no --pretrained, no --only) does not fetch it
    assert download_model.build_parser().parse_args([]).pretrained is False
    assert "resnet50" not in download_model.MODELS
