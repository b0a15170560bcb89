"""Fusion data generation and fusion training end to end, on a small synthetic DAVIS-layout set.

One module-scoped workspace: a DAVIS 2017 layout (2 train videos of 3 frames, 112×128), a
seeded-weight propagation checkpoint, and fusion data written by ``generate_fusion.py``. The
training runs use 48×48 crops, no DataLoader workers, and a handful of iterations.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers_train import CROP, make_davis_set, run_torchrun


@pytest.fixture(scope="module")
def ws(tmp_path_factory, seeded_checkpoints):
    import generate_fusion
    root = tmp_path_factory.mktemp("fusion_ws")
    make_davis_set(root / "DAVIS" / "2017")
    prop = seeded_checkpoints["propagation_model"]
    run_dir = root / "fusion_data" / "davis" / "sep2_mem1"
    rc = generate_fusion.main(["--dataset", "DAVIS", "--davis_root", str(root / "DAVIS" / "2017"), "--model", str(prop),
                               "--separation", "2", "--mem_freq", "1", "--output", str(run_dir), "--device", "cpu"])
    assert rc == 0
    return SimpleNamespace(root=root, davis=root / "DAVIS", prop=prop, fusion_root=root / "fusion_data" / "davis",
                           run_dir=run_dir)


def train_args(ws, *extra: str) -> list[str]:
    return ["--stage", "1", "--davis_root", str(ws.davis), "--fusion_root", str(ws.fusion_root),
            "--load_prop", str(ws.prop), "--crop_size", str(CROP), "--num_workers", "0",
            "-b", "2", "--save_dir", str(ws.root / "saves"), "--log_dir", str(ws.root / "log"), *extra]


# --------------------------------------------------------------------------------------------- generation
@pytest.mark.slow  # its setup builds the module's workspace (fusion data generation with the real network)
def test_generate_fusion_writes_original_layout(ws):
    trainval = ws.davis / "2017" / "trainval"
    train_videos = (trainval / "ImageSets" / "2017" / "train.txt").read_text().split()
    # hidden entries (the run records in .done) are not videos: FusionDataset skips them
    assert sorted(p.name for p in ws.run_dir.iterdir() if not p.name.startswith(".")) == sorted(train_videos)
    assert sorted(p.stem for p in (ws.run_dir / ".done").glob("*.json")) == sorted(train_videos)
    for video in train_videos:
        gt0 = np.asarray(Image.open(trainval / "Annotations" / "480p" / video / "00000.png"))
        labels = sorted(int(x) for x in np.unique(gt0) if x)
        refs = sorted(p.name for p in (ws.run_dir / video).iterdir())
        assert refs == ["00000", "00002"]  # separation 2 over 3 frames
        for ref in refs:
            objs = sorted(p.name for p in (ws.run_dir / video / ref).iterdir())
            assert objs == [f"{label:05d}" for label in labels]
            for obj in objs:
                frames = sorted(p.name for p in (ws.run_dir / video / ref / obj).iterdir())
                assert frames == [f"{f:05d}.png" for f in range(3)]  # DAVIS: the whole video
                png = Image.open(ws.run_dir / video / ref / obj / "00001.png")
                assert png.mode == "L" and png.size == (128, 112)
            # the reference frame holds the (aggregated) ground truth itself
            ref_map = np.asarray(Image.open(ws.run_dir / video / ref / objs[0] / f"{ref}.png"))
            gt_ref = np.asarray(Image.open(trainval / "Annotations" / "480p" / video / f"{ref}.png")) == int(objs[0])
            assert (ref_map > 127).tolist() == gt_ref.tolist()


@pytest.mark.slow
def test_generate_fusion_bl_limits_the_range(ws, tmp_path):
    import shutil
    import generate_fusion
    trainval = ws.davis / "2017" / "trainval"
    video = (trainval / "ImageSets" / "2017" / "train.txt").read_text().split()[0]
    for sub in ("JPEGImages", "Annotations"):
        shutil.copytree(trainval / sub / "480p" / video, tmp_path / "BL30K" / sub / video)
    out = tmp_path / "fusion_bl" / "run"
    rc = generate_fusion.main(["--dataset", "BL", "--bl_root", str(tmp_path / "BL30K"), "--model", str(ws.prop),
                               "--separation", "2", "--range", "1", "--mem_freq", "5", "--start", "0", "--end", "0",
                               "--output", str(out), "--device", "cpu"])
    assert rc == 0
    for ref, frames in (("00000", ["00000.png", "00001.png"]), ("00002", ["00001.png", "00002.png"])):
        for obj in (out / video / ref).iterdir():
            assert sorted(p.name for p in obj.iterdir()) == frames


def test_fusion_dataset_sample(ws):
    from dataset.fusion_dataset import FusionDataset
    trainval = ws.davis / "2017" / "trainval"
    ds = FusionDataset(trainval / "JPEGImages" / "480p", trainval / "Annotations" / "480p", ws.fusion_root,
                       crop_size=CROP, verbose=False)
    assert len(ds) == 200
    np.random.seed(0)
    seen_second = False
    for i in (0, 1, 100, 101):
        s = ds[i]
        assert s["rgb"].shape == (3, CROP, CROP) and s["src2_ref_im"].shape == (3, CROP, CROP)
        for key in ("gt", "seg1", "seg2", "src2_ref", "src2_ref_gt", "gt2", "seg12", "seg22", "src2_ref2",
                    "src2_ref_gt2"):
            assert s[key].shape == (1, CROP, CROP) and 0 <= s[key].min() and s[key].max() <= 1
        assert torch.equal(s["cls_gt"] == 1, s["gt"][0] > 0.5)
        assert torch.equal(s["cls_gt"] == 2, s["gt2"][0] > 0.5)
        r1, r2 = s["info"]["refs"]
        t = s["info"]["frame"]
        assert r1 != r2 and {r1, r2} <= {0, 2}
        assert s["dist"].tolist() == pytest.approx([abs(r1 - t) / abs(r1 - r2), abs(r2 - t) / abs(r1 - r2)])
        if s["selector"].tolist() == [1.0, 1.0]:
            seen_second = True
        else:
            assert s["selector"].tolist() == [1.0, 0.0] and s["gt2"].abs().sum() == 0
    assert seen_second


# ----------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def ddp_run(ws):
    """``torchrun --nproc_per_node=2 train.py`` (gloo on CPU): 3 iterations."""
    proc = run_torchrun(2, ["train.py", *train_args(ws, "--id", "ddp", "-i", "3", "--report_interval", "1",
                                                 "--image_interval", "2")],
                        cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list((ws.root / "saves").glob("*_ddp"))
    assert len(runs) == 1, runs
    return SimpleNamespace(proc=proc, run=runs[0])


@pytest.mark.slow
def test_torchrun_two_processes_train_and_save(ws, ddp_run):
    from model.factory import load_fusion
    out = ddp_run.proc.stdout
    assert "I am rank 0 in the world of 2" in out and "I am rank 1 in the world of 2" in out
    assert "ddp - It      1 [TRAIN] [total_loss   ]: " in out
    assert "[progress] it 2/3" in out
    name = ddp_run.run.name
    weights = ddp_run.run / f"{name}_3.pth"
    checkpoint = ddp_run.run / f"{name}_checkpoint.pth"
    assert weights.is_file() and checkpoint.is_file()
    plain = torch.load(weights, weights_only=True)
    assert len(plain) == 12 and not any(k.startswith("module.") for k in plain)
    load_fusion(weights)  # loadable as fusion.pth by the GUI / evaluator
    ckpt = torch.load(checkpoint, weights_only=True)
    assert ckpt["it"] == 3 and ckpt["scheduler"]["last_epoch"] == 3
    assert all(int(s["step"]) == 3 for s in ckpt["optimizer"]["state"].values())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(ws.root / "log" / name), size_guidance={"images": 0}).Reload()
    assert {"train/total_loss", "train/p", "train/iou/iou", "train/iou/sec_iou", "train/lr", "train/time"} <= \
        set(events.Tags()["scalars"]), events.Tags()
    assert "train/pairs" in events.Tags()["images"]
    assert {"hyperpara/text_summary", "git/text_summary"} & set(events.Tags()["tensors"])


@pytest.mark.slow
def test_resume_continues_at_saved_iteration(ws, ddp_run, capsys):
    import train
    from util.hyper_para import parse_fusion_args
    checkpoint = ddp_run.run / f"{ddp_run.run.name}_checkpoint.pth"
    saved = torch.load(checkpoint, weights_only=True)

    # loading alone (iterations reached already): exactly the saved state
    trainer = train.run(parse_fusion_args(train_args(ws, "--id", "NULL", "-i", "3", "--load_model", str(checkpoint))))
    assert trainer.iteration == 3 and trainer.loss_history == []
    opt = trainer.optimizer.state_dict()
    assert opt["param_groups"] == saved["optimizer"]["param_groups"]
    for idx, state in saved["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(opt["state"][idx][key], value), (idx, key)
    assert trainer.scheduler.state_dict() == saved["scheduler"]
    for key, value in saved["network"].items():
        assert torch.equal(trainer.network.state_dict()[key], value)

    # continuing: iterations 3 and 4 run, then the final save at 5
    trainer = train.run(parse_fusion_args(train_args(ws, "--id", "resumed", "-i", "5", "--load_model",
                                                     str(checkpoint))))
    assert trainer.iteration == 5 and len(trainer.loss_history) == 2
    assert "Resumed from" in capsys.readouterr().out
    resumed = next((ws.root / "saves").glob("*_resumed"))
    ckpt = torch.load(resumed / f"{resumed.name}_checkpoint.pth", weights_only=True)
    assert ckpt["it"] == 5 and ckpt["scheduler"]["last_epoch"] == 5
    assert all(int(s["step"]) == 5 for s in ckpt["optimizer"]["state"].values())
    assert (resumed / f"{resumed.name}_5.pth").is_file()


@pytest.mark.slow
def test_short_overfit_lowers_loss(ws):
    import train
    from dataset.fusion_dataset import FusionDataset
    from model.factory import load_attention_reader
    from model.fusion_model import fusion_forward
    from model.fusion_net import FusionNet
    from util.hyper_para import parse_fusion_args
    from torch.utils.data import default_collate

    torch.manual_seed(0)
    init = ws.root / "fusion_init.pth"
    torch.save(FusionNet().state_dict(), init)
    trainer = train.run(parse_fusion_args(train_args(ws, "--id", "NULL", "-i", "16", "-b", "2", "--lr", "5e-3",
                                                     "--steps", "1000", "--load_network", str(init))))
    assert trainer.iteration == 16

    trainval = ws.davis / "2017" / "trainval"
    ds = FusionDataset(trainval / "JPEGImages" / "480p", trainval / "Annotations" / "480p", ws.fusion_root,
                       crop_size=CROP, verbose=False)
    np.random.seed(1)
    batch = default_collate([ds[i] for i in (0, 100, 1, 101, 2, 102)])
    arn = load_attention_reader(ws.prop)

    def plain_ce(net) -> float:
        with torch.no_grad():
            out = fusion_forward(net.eval(), arn, batch)
        return float(torch.nn.functional.cross_entropy(out["logits"], batch["cls_gt"]))

    before = FusionNet()
    before.load_state_dict(torch.load(init, weights_only=True))
    ce_before, ce_after = plain_ce(before), plain_ce(trainer.network)
    assert ce_after < 0.5 * ce_before, (ce_before, ce_after)  # measured: 1.39 → 0.30


# ------------------------------------------------------------------------------------------------- errors
def test_missing_data_root_is_one_line(ws, tmp_path, capsys):
    import train
    args = train_args(ws, "-i", "1")
    args[args.index("--davis_root") + 1] = str(tmp_path / "nowhere")
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "nowhere/2017/trainval/JPEGImages/480p" in err and "expected" in err and "%05d.jpg" in err


def test_missing_fusion_data_is_one_line(ws, tmp_path, capsys):
    import train
    args = train_args(ws, "-i", "1")
    args[args.index("--fusion_root") + 1] = str(tmp_path / "no_fusion")
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_fusion" in err and "generate_fusion.py" in err


def test_missing_propagation_checkpoint_is_one_line(ws, tmp_path, capsys):
    import train
    args = train_args(ws, "-i", "1")
    args[args.index("--load_prop") + 1] = str(tmp_path / "missing.pth")
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.pth" in err and "propagation checkpoint not found" in err


def test_generate_fusion_missing_root_is_one_line(ws, tmp_path, capsys):
    import generate_fusion
    rc = generate_fusion.main(["--dataset", "DAVIS", "--davis_root", str(tmp_path / "none"), "--model", str(ws.prop),
                               "--separation", "2", "--mem_freq", "1", "--output", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: --davis_root {tmp_path / 'none'}: ")
    assert "trainval/JPEGImages/480p" in err and "ImageSets" in err
    assert not (tmp_path / "out").exists()
