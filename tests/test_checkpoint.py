"""Checkpoint loading through the real loaders (model.factory → util.checkpoint): errors are one line,
name the file and say what to do."""
from __future__ import annotations

import pytest
import torch

from model.factory import load_fusion, load_propagation
from model.fusion_net import FusionNet
from util.checkpoint import CheckpointError, load_weights


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def fusion_ckpt(tmp_path):
    path = tmp_path / "fusion.pth"
    torch.save(FusionNet().state_dict(), path)
    return path


@pytest.mark.parametrize("loader", [load_propagation, load_fusion])
def test_missing_file_names_file_and_download_script(tmp_path, loader):
    path = tmp_path / "saves" / "nothing_here.pth"
    with pytest.raises(CheckpointError) as err:
        loader(path)
    msg = _one_line(err)
    assert str(path) in msg and "not found" in msg and "python download_model.py" in msg


def test_truncated_file(fusion_ckpt):
    data = fusion_ckpt.read_bytes()
    fusion_ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_fusion(fusion_ckpt)
    msg = _one_line(err)
    assert str(fusion_ckpt) in msg and "cannot be read" in msg and "python download_model.py" in msg


@pytest.mark.parametrize("content", [b"", b"hello\nthis is a text file\n", b"\x80\x04K\x01."])
def test_non_checkpoint_file(tmp_path, content):
    path = tmp_path / "fusion.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_fusion(path)
    msg = _one_line(err)
    assert str(path) in msg and ("cannot be read" in msg or "not a checkpoint" in msg)


def test_pickle_without_tensors(tmp_path):
    path = tmp_path / "fusion.pth"
    torch.save({"epoch": 3, "note": "no weights"}, path)
    with pytest.raises(CheckpointError, match="no tensors found") as err:
        load_fusion(path)
    assert str(path) in _one_line(err)


def test_fusion_weights_into_propagation_net(fusion_ckpt):
    with pytest.raises(CheckpointError) as err:
        load_propagation(fusion_ckpt)
    msg = _one_line(err)
    assert str(fusion_ckpt) in msg and "PropagationNetwork" in msg
    assert "missing keys: decoder." in msg and "unexpected keys: conv1.0.bias" in msg
    assert "right checkpoint" in msg


def test_shape_mismatch(tmp_path):
    sd = FusionNet().state_dict()
    sd["conv1.0.weight"] = torch.zeros(32, 8, 3, 3)
    path = tmp_path / "fusion.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_fusion(path)
    msg = _one_line(err)
    assert "shape mismatch" in msg and "conv1.0.weight (32, 8, 3, 3) vs (32, 9, 3, 3)" in msg


def test_nested_and_prefixed_layouts_load(tmp_path):
    ref = FusionNet().state_dict()
    for i, obj in enumerate([{"network": ref}, {"module." + k: v for k, v in ref.items()}]):
        path = tmp_path / f"f{i}.pth"
        torch.save(obj, path)
        net = load_fusion(path)
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        assert all(torch.equal(net.state_dict()[k], ref[k]) for k in ref)


def test_ignore_prefixes_still_strict_on_the_rest(tmp_path):
    sd = FusionNet().state_dict()
    path = tmp_path / "fusion.pth"
    torch.save(sd, path)
    # dropping a prefix the model needs is reported as missing keys
    with pytest.raises(CheckpointError, match="missing keys: final_conv.bias, final_conv.weight"):
        load_weights(FusionNet(), path, ignore_prefixes=("final_conv.",))
