"""The generic training infrastructure with a toy network: loop, checkpoints, resume, SIGTERM, logging,
seeding and the bootstrapped cross-entropy schedule."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from model.losses import BootstrappedCE, bootstrap_fraction
from util.distributed import init_distributed, make_worker_init_fn, seed_everything
from util.log_integrator import Integrator
from util.logger import ProgressMeter, TensorboardLogger, fixed_width
from util.trainer import Trainer, TrainerConfig


class ToyTrainer(Trainer):
    """Least squares on a linear layer; can raise SIGTERM at a chosen iteration."""

    sigterm_at: int | None = None

    def compute(self, data, it):
        x, y = data
        if it == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        loss = ((self.model(x) - y) ** 2).mean()
        return {"total_loss": loss, "hide_x": 1.0}, {}


def make_toy(tmp_path, iterations: int, save_interval: int = 1000):
    seed_everything()
    net = nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.05, weight_decay=1e-7)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [4], 0.1)
    cfg = TrainerConfig(iterations=iterations, report_interval=2, image_interval=1000, save_interval=save_interval,
                        save_prefix=tmp_path / "run" / "run")
    trainer = ToyTrainer(init_distributed(), net, opt, sched, cfg, logger=None)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False, drop_last=True)
    return trainer, loader


def test_loop_saves_both_checkpoints_and_resumes(tmp_path):
    trainer, loader = make_toy(tmp_path, iterations=6, save_interval=4)
    assert trainer.fit(loader) == 6
    assert trainer.loss_history[-1] < trainer.loss_history[0]
    assert (tmp_path / "run" / "run_4.pth").is_file() and (tmp_path / "run" / "run_6.pth").is_file()
    ckpt = torch.load(tmp_path / "run" / "run_checkpoint.pth", weights_only=True)
    assert ckpt["it"] == 6 and ckpt["scheduler"]["last_epoch"] == 6
    assert set(torch.load(tmp_path / "run" / "run_6.pth", weights_only=True)) == {"weight", "bias"}

    # resume: same state, continues at 6 (epoch 0 of 8 batches) up to 10
    resumed, loader = make_toy(tmp_path, iterations=10)
    assert resumed.load_checkpoint(tmp_path / "run" / "run_checkpoint.pth") == 6
    assert resumed.optimizer.state_dict()["state"][0]["step"] == ckpt["optimizer"]["state"][0]["step"]
    assert torch.equal(resumed.optimizer.state_dict()["state"][0]["exp_avg"], ckpt["optimizer"]["state"][0]["exp_avg"])
    assert resumed.scheduler.get_last_lr() == pytest.approx([0.005])
    assert resumed.fit(loader, start_it=6) == 10 and len(resumed.loss_history) == 4
    assert torch.load(tmp_path / "run" / "run_checkpoint.pth", weights_only=True)["it"] == 10


def test_sigterm_finishes_iteration_and_saves(tmp_path, capsys):
    trainer, loader = make_toy(tmp_path, iterations=100)
    trainer.sigterm_at = 2
    previous = signal.getsignal(signal.SIGTERM)
    assert trainer.fit(loader) == 3  # iteration 2 completes, then the loop stops
    assert trainer.stop_signal == signal.SIGTERM   # the script exits 143, not 0
    assert signal.getsignal(signal.SIGTERM) is previous
    assert torch.load(tmp_path / "run" / "run_checkpoint.pth", weights_only=True)["it"] == 3
    assert "SIGTERM received" in capsys.readouterr().out


def test_checkpoint_errors_are_one_line(tmp_path):
    from util.checkpoint import CheckpointError
    trainer, _ = make_toy(tmp_path, iterations=1)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        trainer.load_checkpoint(tmp_path / "absent.pth")
    torch.save(trainer.network.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match="use --load_network"):
        trainer.load_checkpoint(tmp_path / "weights.pth")


def test_integrator_hooks_and_console_format(capsys, tmp_path):
    logger = TensorboardLogger("exp", "run1", tmp_path)
    integ = Integrator(logger)
    integ.add_hook(lambda v: ("iou/iou", (v["hide_iou/i"] + 1) / (v["hide_iou/u"] + 1)))
    integ.add_dict({"total_loss": torch.tensor(1.0), "hide_iou/i": 3.0, "hide_iou/u": 7.0})
    integ.add_dict({"total_loss": torch.tensor(3.0), "hide_iou/i": 1.0, "hide_iou/u": 1.0})
    result = integ.finalize("train", 100)
    assert result == pytest.approx({"iou/iou": 5 / 9, "total_loss": 2.0})
    out = capsys.readouterr().out
    assert "exp - It    100 [TRAIN] [total_loss   ]: 2.0000000" in out
    assert "exp - It    100 [TRAIN] [iou/iou      ]: 0.5555555" in out
    assert "hide" not in out
    logger.close()
    assert list((tmp_path / "run1").glob("events.out.tfevents.*"))
    assert fixed_width(0.123456789123) == "0.1234567"


def test_progress_meter_eta():
    meter = ProgressMeter(0, 100)
    meter._last_time -= 10.0  # pretend 10 s passed
    speed, eta = meter.update(50)
    assert speed == pytest.approx(5.0, rel=0.05) and eta == pytest.approx(10.0, rel=0.05)
    assert "it 60/100" in meter.line(60) and "it/s" in meter.line(60)


def test_worker_seed_depends_on_rank_and_worker():
    torch.manual_seed(5)
    seeds = {}
    for rank in (0, 1):
        for worker in (0, 1):
            make_worker_init_fn(rank)(worker)
            seeds[rank, worker] = np.random.randint(1 << 30)
    assert len(set(seeds.values())) == 4


def test_bootstrapped_ce_schedule():
    assert bootstrap_fraction(0, 200, 500) == 1.0
    assert bootstrap_fraction(200, 200, 500) == 1.0
    assert bootstrap_fraction(350, 200, 500) == pytest.approx(0.15 + 0.85 * 0.5)
    assert bootstrap_fraction(500, 200, 500) == pytest.approx(0.15)
    assert bootstrap_fraction(10_000, 200, 500) == 0.15
    # a run too short for a warm-up (train.py -i 1: start == end == 0) goes straight to the hardest pixels
    assert bootstrap_fraction(0, 0, 0) == 0.15
    torch.manual_seed(0)
    logits, target = torch.randn(1, 3, 10, 10), torch.randint(0, 3, (1, 10, 10))
    ce = BootstrappedCE(200, 500)
    loss, p = ce(logits, target, 100)
    assert p == 1.0 and loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, target)))
    loss, p = ce(logits, target, 1000)
    raw = torch.nn.functional.cross_entropy(logits, target, reduction="none").flatten().sort(descending=True).values
    assert p == 0.15 and float(loss) == pytest.approx(float(raw[:15].mean()))
