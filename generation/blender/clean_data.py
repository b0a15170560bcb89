"""Collect finished BL30K renders.

A render folder is complete when its ``segmentation`` folder holds 160 files. Complete renders not yet
in ``output`` are moved there and their YAML (``<yaml_root>/yaml_<first 3 chars of name>/<name>.yaml``)
is copied into the moved folder; incomplete ones stay where they are (they may still be rendering).

    python generation/blender/clean_data.py rendered/ BL30K_raw/ yaml/
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

N_FRAMES = 160


def is_complete(render: Path, n_frames: int = N_FRAMES) -> bool:
    seg = render / "segmentation"
    return seg.is_dir() and len(os.listdir(seg)) == n_frames


def clean(input_dir: str | os.PathLike, output_dir: str | os.PathLike, yaml_root: str | os.PathLike,
          n_frames: int = N_FRAMES) -> tuple[int, int]:
    """Move complete renders; returns (renders now in output, renders moved by this call)."""
    input_dir, output_dir, yaml_root = Path(input_dir), Path(output_dir), Path(yaml_root)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: input folder of renders not found")
    output_dir.mkdir(parents=True, exist_ok=True)
    updated = 0
    for render in sorted(p for p in input_dir.iterdir() if p.is_dir()):
        if not is_complete(render, n_frames):
            continue
        target = output_dir / render.name
        if target.exists():
            print(f"{target}: already in the output; left in {input_dir}")
            continue
        yaml_file = yaml_root / f"yaml_{render.name[:3]}" / f"{render.name}.yaml"
        if not yaml_file.is_file():
            raise FileNotFoundError(f"{yaml_file}: the scene config of render {render.name} is missing")
        shutil.move(str(render), str(target))
        shutil.copy2(yaml_file, target / yaml_file.name)
        updated += 1
    total = sum(1 for p in output_dir.iterdir() if p.is_dir())
    return total, updated


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Move complete renders (160 segmentation frames) to the output folder "
                                "with their YAML config.")
    p.add_argument("input", help="folder of render folders")
    p.add_argument("output", help="folder that collects the complete renders")
    p.add_argument("yaml_root", help="folder with yaml_<prefix>/<name>.yaml")
    args = p.parse_args(argv)
    try:
        total, updated = clean(args.input, args.output, args.yaml_root)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("Number of completed renders: ", total)
    print("Number of updated renders: ", updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
