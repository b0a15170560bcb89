"""Download BL30K (six tar segments of ≈115 GB, ~700 GB in all) and merge them into
``<root>/BL30K/{JPEGImages,Annotations}``.

    python download_bl30k.py --yes                      # all six segments (~1 TB free disk needed)
    python download_bl30k.py --only a b c --yes         # half of the data is about enough (author's note)
    python download_bl30k.py --mirror http://ckcpu1.cse.ust.hk:8080/MiVOS --yes   # UST mirror

Each segment's MD5 is verified; the free space is checked before anything starts; downloads resume;
finished segments leave ``BL30K/.BL30K_<x>.done`` and are skipped on re-runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from util.download import (RESUME_HINT, MIRRORS_BL30K, ArchivePart, DownloadError, Source, check_free_space,
                           confirm_licence, check_folder, human_bytes, install_part, select_parts, with_mirror)

LICENCE = """\
BL30K is a synthetic dataset rendered from ShapeNet models (https://www.shapenet.org/terms): it is a
ShapeNet derivative and inherits its terms. Its textures and skyboxes were collected with Google image
search using the non-commercial-reuse licence filter. Use BL30K for NON-COMMERCIAL research only.
Dataset page: https://github.com/hkchengrex/MiVOS (also https://doi.org/10.13012/B2IDB-1702934_V1).
The six segments take ~700 GB; downloading and extracting needs ~1 TB of free disk space.
"""

SEGMENT_BYTES = 117 * 10**9  # ≈115 GB (700 GB / 6); only used for the free-space check

# The original's download links (verbatim) and the archives' MD5 sums.
SOURCES: dict[str, Source] = {
    "a": Source("https://drive.google.com/uc?id=1z9V5zxLOJLNt1Uj7RFqaP2FZWKzyXvVc", "BL30K_a.tar",
                "35312550b9a75467b60e3b2be2ceac81", SEGMENT_BYTES),
    "b": Source("https://drive.google.com/uc?id=11-IzgNwEAPxgagb67FSrBdzZR7OKAEdJ", "BL30K_b.tar",
                "269e2f9ad34766b5f73fa117166c1731", SEGMENT_BYTES),
    "c": Source("https://drive.google.com/uc?id=1ZfIv6GTo-OGpXpoKen1fUvDQ0A_WoQ-Q", "BL30K_c.tar",
                "a3f7c2a62028d0cda555f484200127b9", SEGMENT_BYTES),
    "d": Source("https://drive.google.com/uc?id=1G4eXgYS2kL7_Cc0x3N1g1x7Zl8D_aU_-", "BL30K_d.tar",
                "e659ed7c4e51f4c06326855f4aba8109", SEGMENT_BYTES),
    "e": Source("https://drive.google.com/uc?id=1Y8q0V_oBwJIY27W_6-8CD1dRqV2gNTdE", "BL30K_e.tar",
                "d704e86c5a6a9e920e5e84996c2e0858", SEGMENT_BYTES),
    "f": Source("https://drive.google.com/uc?id=1nawBAazf_unMv46qGBHhWcQ4JXZ5883r", "BL30K_f.tar",
                "bf73914d2888ad642bc01be60523caf6", SEGMENT_BYTES),
}

LAYOUT = ("JPEGImages", "Annotations")


def build_parts(sources: dict[str, Source]) -> list[ArchivePart]:
    """One part per segment: ``<root>/BL30K_<x>.tar`` merged into ``<root>/BL30K/{JPEGImages,Annotations}``."""
    return [ArchivePart(Path(s.filename).stem, s, s.filename, "BL30K", layout=LAYOUT) for s in sources.values()]


def _name_of(key: str) -> str:
    return f"BL30K_{key}"


def needed_bytes(parts: list[ArchivePart], root: Path) -> int:
    """Free space needed for the parts still to do: their extracted data plus one tar at a time
    (each tar is deleted once extracted), minus what already sits in partial/complete downloads."""
    todo = [p for p in parts if not p.is_done(root)]
    if not todo:
        return 0
    sizes = [p.source.size or 0 for p in todo]
    have = 0
    for p in todo:
        for f in (root / p.archive, (root / p.archive).with_name(Path(p.archive).name + ".part")):
            if f.is_file():
                have += f.stat().st_size
    return max(0, sum(sizes) + max(sizes) - have)


def run(root: Path, keys: list[str], sources: dict[str, Source], *, space_check: bool = True,
        keep_archives: bool = False, quiet: bool = False) -> dict[str, str]:
    parts = [p for p in build_parts(sources) if p.name in {_name_of(k) for k in keys}]
    if space_check:
        need = needed_bytes(parts, root)
        if need:
            check_free_space(root, need, f"BL30K ({len(parts)} segment(s), tar + extracted data)")
    status = {}
    for part in parts:
        status[part.name] = install_part(part, root, mirrors=MIRRORS_BL30K, keep_archive=keep_archives, quiet=quiet)
        print(f"{part.name}: {status[part.name]}")
    return status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Download BL30K (six ~115 GB tar segments, MD5-verified, resumable) "
                                "and merge them into <root>/BL30K/{JPEGImages,Annotations}.")
    p.add_argument("--root", default="..", help="folder that receives BL30K/ (default: ..)")
    p.add_argument("--only", nargs="+", metavar="SEG",
                   help="segments to install: a b c d e f (or BL30K_a ...); default all six")
    p.add_argument("--yes", action="store_true", help="accept the licence without asking")
    p.add_argument("--mirror", default=None, help="base URL holding BL30K_{a-f}.tar, e.g. the UST mirror "
                   "http://ckcpu1.cse.ust.hk:8080/MiVOS")
    p.add_argument("--keep_archives", action="store_true", help="keep the tar files after extraction")
    p.add_argument("--no_space_check", action="store_true", help="skip the free-disk check")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    only = [o[len("BL30K_"):] if o.startswith("BL30K_") else o for o in args.only] if args.only else None
    from util.cli import run_cli
    plan: dict = {}

    def check(args) -> None:
        """Bad options are refused (exit 2) before the licence question and any download."""
        plan["sources"] = with_mirror(SOURCES, args.mirror)
        plan["keys"] = select_parts(SOURCES, only)
        check_folder(args.root, "--root")

    def fetch(args) -> None:
        keys = plan["keys"]
        confirm_licence(LICENCE, args.yes)
        print(f"Installing {', '.join(_name_of(k) for k in keys)} into {Path(args.root) / 'BL30K'} "
              f"(about {human_bytes(len(keys) * SEGMENT_BYTES)} of data)")
        run(Path(args.root), keys, plan["sources"], space_check=not args.no_space_check,
            keep_archives=args.keep_archives, quiet=args.quiet)

    return (run_cli(check, args, (DownloadError,), code=2)
            or run_cli(fetch, args, (DownloadError,), code=1, interrupted=RESUME_HINT))


if __name__ == "__main__":
    sys.exit(main())
