"""Propagation training (``train_propagation.py``): data pieces, the training network, and a few iterations of
each stage on CPU with generated data (one under ``torchrun`` with 2 processes), resume included."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from tests.helpers_proptrain import CROP, make_bl30k_root, make_davis_youtube_roots, make_static_root
from tests.helpers_train import run_torchrun

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ data pieces
def test_frame_sampling_bounds():
    from dataset.vos_dataset import sample_frame_indices
    rng = np.random.RandomState(0)
    for n in (3, 4, 7, 30, 100):
        for max_jump in (1, 5, 10, 25):
            for _ in range(50):
                idx = sample_frame_indices(n, max_jump, rng)
                assert len(idx) == 3 and all(0 <= i < n for i in idx), (n, max_jump, idx)
                forward = idx if idx[0] <= idx[-1] else idx[::-1]
                assert forward[0] <= forward[1] <= forward[2]
                # each jump is at most max_jump + 1 frames
                assert forward[1] - forward[0] <= max_jump + 1 and forward[2] - forward[1] <= max_jump + 1


def test_bl30k_object_rule():
    from dataset.vos_dataset import bl_good_labels
    m = [np.zeros((100, 100), np.uint8) for _ in range(3)]
    m[0][:40, :40] = 1      # large: kept
    m[0][50:65, 50:65] = 2  # 15×15 here, small elsewhere: kept
    m[1][50:60, 50:60] = 2
    m[0][70:85, 0:15] = 3   # 15×15 here but large in frame 2: dropped
    m[2][50:100, 0:50] = 3
    m[0][90:95, 90:95] = 4  # too small: dropped
    assert bl_good_labels(m, [1, 2, 3, 4]) == [1, 2]


def test_tps_warp_keeps_shape_and_labels():
    from dataset.tps import random_tps_warp
    rng = np.random.RandomState(3)
    labels = np.zeros((40, 50), np.uint8)
    labels[5:20, 5:25] = 1
    labels[22:38, 28:48] = 2
    image = np.dstack([labels * 100, labels * 50, np.full_like(labels, 30)]).astype(np.uint8)
    warped_im, warped_gt = random_tps_warp(Image.fromarray(image), Image.fromarray(labels), scale=0.02, rng=rng)
    assert warped_im.size == (50, 40) and warped_gt.size == (50, 40)
    out = np.asarray(warped_gt)
    assert set(np.unique(out)) <= {0, 1, 2}
    assert out.shape == labels.shape and 0.8 < (out == 1).sum() / (labels == 1).sum() < 1.25
    assert not np.array_equal(out, labels)  # it did deform
    # zero displacement is the identity
    same_im, same_gt = random_tps_warp(Image.fromarray(image), Image.fromarray(labels), scale=0.0, rng=rng)
    assert np.array_equal(np.asarray(same_gt), labels) and np.abs(np.asarray(same_im, int) - image).max() <= 1


def test_static_dataset_sample(tmp_path):
    from dataset.static_dataset import StaticTransformDataset
    root = make_static_root(tmp_path / "static")
    fss = StaticTransformDataset(root / "fss", method=0, crop_size=CROP, verbose=False)
    flat = StaticTransformDataset(root / "ecssd", method=1, crop_size=CROP, verbose=False)
    assert len(fss) == 2 and len(flat) == 2
    np.random.seed(0)
    for ds in (fss, flat):
        for i in range(len(ds)):
            s = ds[i]
            assert s["rgb"].shape == (3, 3, CROP, CROP) and s["gt"].shape == (3, 1, CROP, CROP)
            assert 0 <= s["gt"].min() and s["gt"].max() <= 1 and s["gt"].max() > 0.5
            assert torch.equal(s["cls_gt"], (s["gt"][:, 0] > 0.5).long())


def test_vos_dataset_sample(tmp_path):
    from dataset.vos_dataset import VOSDataset
    bl = make_bl30k_root(tmp_path / "BL30K", num_videos=3, num_frames=4)
    ds = VOSDataset(bl / "JPEGImages", bl / "Annotations", max_jump=2, is_bl=False, crop_size=CROP, verbose=False)
    assert len(ds) == 3
    np.random.seed(1)
    seen_two = False
    for i in range(len(ds)):
        s = ds[i]
        assert s["rgb"].shape == (3, 3, CROP, CROP)
        assert s["gt"].shape == s["sec_gt"].shape == (3, 1, CROP, CROP)
        assert torch.equal(s["cls_gt"] == 1, s["gt"][:, 0] > 0.5)
        assert torch.equal(s["cls_gt"] == 2, s["sec_gt"][:, 0] > 0.5)
        assert s["info"]["objects"][0] > 0 and s["gt"][0].sum() > 0  # objects come from the first sampled frame
        if s["selector"].tolist() == [1.0, 1.0]:
            seen_two = True
        else:
            assert s["sec_gt"].abs().sum() == 0
    assert seen_two
    subset = VOSDataset(bl / "JPEGImages", bl / "Annotations", 2, False, subset=[ds.videos[1]], crop_size=CROP,
                        verbose=False)
    assert subset.videos == [ds.videos[1]]


def test_skip_curriculum():
    from dataset.skip_curriculum import SkipCurriculumSampler, max_skip_at_epoch
    # stage 1 over 100 epochs: 5, then 10 / 15 / 20 / 25 from epochs 10 / 20 / 30 / 40, back to 5 from 80
    assert [max_skip_at_epoch(e, 100, 1) for e in (0, 9, 10, 19, 20, 30, 40, 79, 80, 99)] == \
        [5, 5, 10, 10, 15, 20, 25, 25, 5, 5]
    assert [max_skip_at_epoch(e, 100, 2) for e in (79, 89, 90)] == [25, 25, 5]
    davis, youtube = SimpleNamespace(max_jump=0), SimpleNamespace(max_jump=0)
    sampler = SkipCurriculumSampler(list(range(10)), [(davis, 1), (youtube, 5)], stage=2, total_epochs=10,
                                    num_replicas=1, rank=0)
    sampler.set_epoch(0)
    assert (davis.max_jump, youtube.max_jump) == (5, 1)
    sampler.set_epoch(4)
    assert (davis.max_jump, youtube.max_jump) == (25, 5)


# ---------------------------------------------------------------------------------------------- network
def test_training_network_keys_and_single_to_multi_conversion():
    from model.propagation.prop_net import PropagationNetwork
    from model.propagation.train_net import MASK_CONV_KEY, PropagationTrainingNetwork, single_to_multi_object
    torch.manual_seed(0)
    single = PropagationTrainingNetwork(single_object=True)
    multi = PropagationTrainingNetwork(single_object=False)
    assert sum(p.numel() for p in single.parameters()) == 53_682_817
    assert sum(p.numel() for p in multi.parameters()) == 53_685_953
    assert multi.memory.top_k is None  # plain softmax read while training
    state = single.state_dict()
    assert state[MASK_CONV_KEY].shape == (64, 4, 7, 7)
    converted = single_to_multi_object(state)
    assert converted[MASK_CONV_KEY].shape == (64, 5, 7, 7)
    assert torch.equal(converted[MASK_CONV_KEY][:, :4], state[MASK_CONV_KEY])
    extra = converted[MASK_CONV_KEY][:, 4].reshape(64, -1)  # orthogonal rows (64 × 49: rank 49)
    assert torch.allclose(extra.T @ extra, torch.eye(49), atol=1e-4)
    multi.load_state_dict(converted)
    # the trained multi-object network loads strictly into the inference network
    assert list(multi.state_dict()) == list(PropagationNetwork().state_dict())


def test_training_step_shapes_and_backward():
    from model.propagation.train_net import PropagationTrainingNetwork
    from model.propagation_model import PropagationLossComputer, propagation_forward
    torch.manual_seed(0)
    net = PropagationTrainingNetwork(single_object=False).eval()
    b = 2
    gt = torch.zeros(b, 3, 1, CROP, CROP)
    gt[:, :, :, 4:16, 4:16] = 1
    sec = torch.zeros_like(gt)
    sec[0, :, :, 20:30, 20:30] = 1
    cls_gt = (gt[:, :, 0] > 0.5).long() + 2 * (sec[:, :, 0] > 0.5).long()
    data = {"rgb": torch.randn(b, 3, 3, CROP, CROP), "gt": gt, "sec_gt": sec, "cls_gt": cls_gt,
            "selector": torch.tensor([[1.0, 1.0], [1.0, 0.0]])}
    out = propagation_forward(net, data, single_object=False)
    assert out["logits_1"].shape == (b, 3, CROP, CROP) and out["mask_2"].shape == (b, 2, CROP, CROP)
    assert out["mask_1"][1, 1].abs().max() < 1e-5  # absent second object is zeroed by the selector
    losses = PropagationLossComputer().compute({**data, **out}, it=0)
    assert torch.allclose(losses["total_loss"], losses["loss_1"] + losses["loss_2"])
    losses["total_loss"].backward()
    bn = net.rgb_encoder.bn1
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0  # BN affine parameters are trained
    assert net.mask_rgb_encoder.conv1.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- training runs
def _args(ws, stage: int, *extra: str) -> list[str]:
    return ["--stage", str(stage), "--static_root", str(ws.static), "--bl_root", str(ws.bl), "--davis_root",
            str(ws.davis), "--yv_root", str(ws.youtube), "--crop_size", str(CROP), "--num_workers", "0", "-b", "1",
            "--save_dir", str(ws.root / "saves"), "--log_dir", str(ws.root / "log"), *extra]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("proptrain")
    davis, youtube = make_davis_youtube_roots(root)
    return SimpleNamespace(root=root, static=make_static_root(root / "static"), bl=make_bl30k_root(root / "BL30K"),
                           davis=davis, youtube=youtube)


@pytest.fixture(scope="module")
def stage0(ws):
    """Stage 0 in one process: 2 iterations, saved."""
    import train_propagation
    from util.hyper_para import parse_propagation_args
    torch.set_num_threads(2)
    # a stand-in for the ImageNet ResNet-50 (torchvision layout, seeded random weights)
    torch.manual_seed(3)
    imagenet = ws.root / "resnet50-imagenet.pth"
    resnet = torchvision.models.resnet50(weights=None)
    torch.save(resnet.state_dict(), imagenet)
    trainer = train_propagation.run(parse_propagation_args(_args(ws, 0, "--id", "s0", "-i", "2", "--report_interval",
                                                                 "1", "--image_interval", "1", "--imagenet",
                                                                 str(imagenet))))
    run = next((ws.root / "saves").glob("*_s0"))
    return SimpleNamespace(trainer=trainer, run=run, resnet=resnet)


@pytest.mark.slow
def test_stage0_trains_saves_and_resumes(ws, stage0):
    import train_propagation
    from util.hyper_para import parse_propagation_args
    assert stage0.trainer.iteration == 2 and len(stage0.trainer.loss_history) == 2
    assert all(np.isfinite(stage0.trainer.loss_history))
    name = stage0.run.name
    weights = torch.load(stage0.run / f"{name}_2.pth", weights_only=True)
    assert weights["mask_rgb_encoder.conv1.weight"].shape == (64, 4, 7, 7)  # single-object network
    # started from the ImageNet file, trained with frozen BatchNorm statistics (eval mode), as the original
    assert not stage0.trainer.model.training
    assert torch.equal(weights["rgb_encoder.res2.0.bn1.running_mean"], stage0.resnet.layer1[0].bn1.running_mean)
    assert torch.equal(weights["mask_rgb_encoder.layer3.5.bn3.running_var"], stage0.resnet.layer3[5].bn3.running_var)
    checkpoint = stage0.run / f"{name}_checkpoint.pth"
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["it"] == 2 and saved["scheduler"]["last_epoch"] == 2

    # resume: same iteration and optimizer state, then one more iteration
    trainer = train_propagation.run(parse_propagation_args(_args(ws, 0, "--id", "NULL", "-i", "2", "--load_model",
                                                                 str(checkpoint), "--imagenet", "/not/read")))
    assert trainer.iteration == 2 and trainer.loss_history == []
    opt = trainer.optimizer.state_dict()
    assert opt["param_groups"] == saved["optimizer"]["param_groups"]
    for idx, state in saved["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(opt["state"][idx][key], value), (idx, key)
    for key, value in saved["network"].items():
        assert torch.equal(trainer.network.state_dict()[key], value), key
    trainer = train_propagation.run(parse_propagation_args(_args(ws, 0, "--id", "NULL", "-i", "3", "--load_model",
                                                                 str(checkpoint), "--imagenet", "/not/read")))
    assert trainer.iteration == 3 and len(trainer.loss_history) == 1


@pytest.mark.slow
def test_stage2_from_stage0_weights(ws, stage0, capsys):
    """Stage 2 (DAVIS ×5 + YouTube) starting from the single-object stage-0 weights (channel conversion)."""
    import train_propagation
    from util.hyper_para import parse_propagation_args
    s0 = stage0.run / f"{stage0.run.name}_2.pth"
    trainer = train_propagation.run(parse_propagation_args(_args(ws, 2, "--id", "NULL", "-i", "2",
                                                                 "--load_network", str(s0))))
    out = capsys.readouterr().out
    assert "2 out of 3 videos accepted" in out  # the DAVIS train list (2 of the 3 generated videos)
    assert "Epoch 0: max skip" in out
    assert trainer.iteration == 2 and all(np.isfinite(trainer.loss_history))
    conv = trainer.network.state_dict()["mask_rgb_encoder.conv1.weight"]
    assert conv.shape == (64, 5, 7, 7)


@pytest.mark.slow
def test_stage1_torchrun_two_processes(ws):
    proc = run_torchrun(2, ["train_propagation.py", *_args(ws, 1, "--id", "ddp1", "-i", "2", "--report_interval",
                                                            "1", "--imagenet", "none")], cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "I am rank 1 in the world of 2" in proc.stdout
    assert "random initialisation (--imagenet none): BatchNorm uses batch statistics" in proc.stdout
    assert "ddp1 - It      1 [TRAIN] [total_loss   ]: " in proc.stdout
    run = next((ws.root / "saves").glob("*_ddp1"))
    ckpt = torch.load(run / f"{run.name}_checkpoint.pth", weights_only=True)
    assert ckpt["it"] == 2
    assert ckpt["network"]["mask_rgb_encoder.conv1.weight"].shape == (64, 5, 7, 7)


def test_bad_data_root_is_one_line_error(tmp_path, capsys):
    import train_propagation
    rc = train_propagation.main(["--stage", "1", "--bl_root", str(tmp_path / "nowhere"), "--num_workers", "0",
                                 "--imagenet", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "nowhere" in err


def test_encoders_start_from_imagenet_as_the_original():
    """Both encoders take conv1/bn1/layer1..3 of an ImageNet ResNet-50; the mask encoder's extra input
    channels are orthogonal, its conv biases zero; a wrong file is one error naming the keys."""
    from model.propagation.train_net import PropagationTrainingNetwork
    from util.checkpoint import CheckpointError
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None)
    state = resnet.state_dict()
    for single in (True, False):
        net = PropagationTrainingNetwork(single_object=single)
        net.init_encoders_from_imagenet(state, torch.Generator().manual_seed(1))
        own = net.state_dict()
        assert torch.equal(own["rgb_encoder.conv1.weight"], state["conv1.weight"])
        assert torch.equal(own["rgb_encoder.res2.2.conv3.weight"], state["layer1.2.conv3.weight"])
        assert torch.equal(own["rgb_encoder.layer3.5.bn3.running_mean"], state["layer3.5.bn3.running_mean"])
        assert torch.equal(own["mask_rgb_encoder.layer2.3.conv2.weight"], state["layer2.3.conv2.weight"])
        assert not own["mask_rgb_encoder.layer2.3.conv2.bias"].any()
        conv = own["mask_rgb_encoder.conv1.weight"]
        assert conv.shape[1] == (4 if single else 5) and torch.equal(conv[:, :3], state["conv1.weight"])
        extra = conv[:, 3:].reshape(64, -1)
        if extra.shape[1] >= 64:  # orthogonal rows (64 × 49 or 64 × 98: rows or columns orthonormal)
            assert torch.allclose(extra @ extra.T, torch.eye(64), atol=1e-4)
        else:
            assert torch.allclose(extra.T @ extra, torch.eye(extra.shape[1]), atol=1e-4)
    broken = {k: v for k, v in state.items() if not k.startswith("layer3.5.")}
    with pytest.raises(CheckpointError, match="missing layer3.5"):
        PropagationTrainingNetwork(single_object=False).init_encoders_from_imagenet(broken)


def test_random_init_trains_batchnorm_and_imagenet_freezes_it():
    """Frozen BatchNorm statistics only suit pretrained encoders; from random initialisation the
    statistics are updated while training."""
    import train_propagation
    from model.propagation.train_net import PropagationTrainingNetwork
    from util.distributed import init_distributed
    from util.trainer import TrainerConfig
    net = PropagationTrainingNetwork(single_object=True)
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [10], 0.1)
    cfg = TrainerConfig(iterations=1, report_interval=10, image_interval=10, save_interval=10, save_prefix=None)
    for frozen in (True, False):
        trainer = train_propagation.PropagationTrainer(init_distributed(), net, opt, sched, cfg, None, frozen_bn=frozen)
        trainer.train_mode()
        assert net.training is (not frozen)


def test_missing_imagenet_file_is_refused_before_work(tmp_path, capsys):
    import train_propagation
    rc = train_propagation.main(["--stage", "0", "--static_root", str(tmp_path), "--imagenet",
                                 str(tmp_path / "resnet50.pth"), "--num_workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --imagenet {tmp_path / 'resnet50.pth'}: ImageNet ResNet-50 weights not found")
    assert "download_model.py --pretrained" in err and "--imagenet none" in err
