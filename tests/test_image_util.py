import numpy as np
import pytest
import torch

from inference_core.frames import PaddedFrames
from util.image_util import denormalize, images_to_torch, normalize_frames
from util.tensor_util import compute_pad, pad_divide_by, unpad


@pytest.mark.reference
def test_normalisation_is_bit_identical_to_original(load_fixture):
    z = load_fixture("propagation")
    ours = normalize_frames(z["frames_u8"])
    assert torch.equal(ours, torch.from_numpy(z["frames_norm"]))


def test_uint8_and_tensor_frame_sources_agree():
    frames = np.random.default_rng(1).integers(0, 256, (3, 30, 45, 3), dtype=np.uint8)
    a = PaddedFrames(frames, torch.device("cpu"), keep_all_on_device=False)
    b = PaddedFrames(images_to_torch(frames), torch.device("cpu"), keep_all_on_device=True)
    for t in range(3):
        assert torch.equal(a.get(t), b.get(t))
    assert a.get(0).shape == (1, 3, 32, 48)


def test_denormalize_inverts():
    frames = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    back = denormalize(normalize_frames(frames)) * 255
    assert np.abs(back.permute(0, 2, 3, 1).numpy() - frames).max() < 1e-3


@pytest.mark.parametrize("h,w,pad", [(480, 854, (5, 5, 0, 0)), (180, 250, (3, 3, 6, 6)), (17, 33, (7, 8, 7, 8)),
                                     (32, 32, (0, 0, 0, 0))])
def test_pad_split_matches_original(h, w, pad):
    assert compute_pad(h, w) == pad
    x = torch.rand(2, 1, h, w)
    p, got = pad_divide_by(x)
    assert got == pad and p.shape[-2] % 16 == 0 and p.shape[-1] % 16 == 0
    assert torch.equal(unpad(p, got), x)
