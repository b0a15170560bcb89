"""Long-clip memory: the gathered top-k readout and the spilling probability store keep the numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_core.prob_store import ProbStore
from model.propagation.memory import readout, scaled_affinity, top_k_readout, top_k_softmax_


@pytest.mark.parametrize("n,m,b,chunk_bytes", [(60, 30, 1, 1 << 26), (600, 150, 2, 1 << 26), (600, 150, 1, 4096)])
def test_top_k_readout_equals_dense_product(n, m, b, chunk_bytes):
    g = torch.Generator().manual_seed(n + m)
    mk, mv = torch.randn(b, 64, n, generator=g), torch.randn(b, 96, n, generator=g)
    qk = torch.randn(1, 64, m, generator=g)
    dense = readout(mv, top_k_softmax_(scaled_affinity(mk, qk), 50))
    gathered = top_k_readout(mk, mv, qk, 50, chunk_bytes=chunk_bytes)
    assert gathered.shape == dense.shape == (b, 96, m)
    assert (gathered - dense).abs().max() < 1e-5
    # the rows are gathered a bounded batch at a time: the batch size never changes a number
    for gather_bytes in (1, 50 * 96 * 4 * 7, 1 << 30):
        assert torch.equal(top_k_readout(mk, mv, qk, 50, chunk_bytes=chunk_bytes, gather_bytes=gather_bytes),
                           gathered)


def test_top_k_readout_needs_enough_memory():
    with pytest.raises(ValueError, match="at least 50 memory positions"):
        top_k_readout(torch.zeros(1, 8, 10), torch.zeros(1, 8, 10), torch.zeros(1, 8, 4), 50)


@pytest.mark.parametrize("storage", ["float32", "uint16"])
def test_spilled_probabilities_are_bit_identical(tmp_path, storage):
    k, t, nh, nw = 2, 12, 32, 48
    frame_bytes = (k + 1) * nh * nw * 4
    plain = ProbStore(k, t, nh, nw, torch.device("cpu"), storage)
    spill = ProbStore(k, t, nh, nw, torch.device("cpu"), storage, spill_dir=tmp_path, ram_bytes=2 * frame_bytes)
    g = torch.Generator().manual_seed(1)
    for i in range(t):
        p = torch.softmax(torch.randn(k + 1, 1, nh, nw, generator=g), 0)
        plain.set(i, p)
        spill.set(i, p)
    assert spill.nbytes <= 2 * frame_bytes < plain.nbytes
    assert spill.disk_bytes > 0
    assert all(torch.equal(plain.get(i), spill.get(i)) for i in range(t))
    # overwrite a spilled frame, add an object, release one: still identical
    p = torch.softmax(torch.randn(k + 1, 1, nh, nw, generator=g), 0)
    plain.set(0, p)
    spill.set(0, p)
    plain.add_object()
    spill.add_object()
    plain.release(5)
    spill.release(5)
    assert not spill.is_set(5)
    assert all(torch.equal(plain.get(i), spill.get(i)) for i in range(t))
    # the spill file is anonymous: nothing is left in the folder
    assert list(tmp_path.iterdir()) == []
    spill.close()


def test_core_with_spill_gives_the_same_masks(tmp_path):
    from inference_core import InferenceCore
    from model.fusion_net import FusionNet
    from model.propagation.prop_net import PropagationNetwork

    torch.manual_seed(0)
    prop, fuse = PropagationNetwork(top_k=50).eval(), FusionNet().eval()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (6, 100, 130, 3), dtype=np.uint8)
    mask = torch.zeros(3, 1, 100, 130)
    mask[1, :, 20:50, 20:60] = 1
    mask[2, :, 60:90, 70:120] = 1
    mask[0] = 1 - mask[1:].sum(0)
    cores = [InferenceCore(prop, fuse, frames, 2, device="cpu"),
             InferenceCore(prop, fuse, frames, 2, device="cpu", prob_spill_dir=tmp_path, prob_ram_bytes=1)]
    for core in cores:
        core.interact(mask, 0)
        core.interact(mask, 5)
    assert cores[1].prob_disk_bytes > 0
    for t in range(6):
        assert torch.equal(cores[0].get_prob(t), cores[1].get_prob(t))
    assert np.array_equal(cores[0].np_masks, cores[1].np_masks)


_HEAP_PROBE = """
import sys, torch
from util.memory import current_rss_bytes, mapped_large_blocks
with mapped_large_blocks():
    pass                                  # a pass before: the policy between passes is now fixed
warm = torch.ones(8 * 2 ** 20 // 4)       # a large block freed: glibc's default then serves blocks
del warm                                  # up to that size from the heap
with mapped_large_blocks() if sys.argv[1] == "pass" else open(__file__):
    before = current_rss_bytes()
    kept, frames = [], []
    for _ in range(48):
        frames.append(torch.ones(3 * 2 ** 20 // 4))   # 3 MiB, like a frame's uint16 probabilities
        kept.append(torch.ones(64))                   # a small long-lived tensor between them
    del frames
    print((current_rss_bytes() - before) // 2 ** 20)
"""


def test_freed_frame_sized_tensors_leave_the_process(tmp_path):
    """While a pass runs (util.memory.mapped_large_blocks), large blocks are memory-mapped, so frame-sized
    tensors freed among long-lived small ones leave the process instead of staying resident as heap
    holes; between passes the heap keeps them (interactions reuse them). Fresh processes, so that no
    earlier test's free heap space serves the blocks."""
    import platform
    import subprocess
    import sys
    from pathlib import Path

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the heap policy is glibc's")
    probe = tmp_path / "probe.py"
    probe.write_text(_HEAP_PROBE)
    root = Path(__file__).resolve().parents[1]
    kept_mib = {}
    for where in ("pass", "between"):
        out = subprocess.run([sys.executable, str(probe), where], cwd=root, capture_output=True, text=True,
                             env={**__import__("os").environ, "PYTHONPATH": str(root)}, check=True)
        kept_mib[where] = int(out.stdout.split()[-1])
    assert kept_mib["pass"] < 32, kept_mib
    assert kept_mib["between"] >= 48, kept_mib    # up to the trim threshold (64 MiB) stays on the heap


def test_large_blocks_are_mapped_only_while_a_pass_runs():
    """The policy holds for every propagated frame of a session's pass (and nested scopes), and is off
    between passes, where interactions reuse heap blocks instead of faulting fresh maps in."""
    import platform

    from inference_core.core import InferenceCore
    from model.fusion_net import FusionNet
    from model.propagation.prop_net import PropagationNetwork
    from util.memory import large_blocks_mapped, mapped_large_blocks
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the heap policy is glibc's")
    assert not large_blocks_mapped()
    with mapped_large_blocks():
        with mapped_large_blocks():
            assert large_blocks_mapped()
        assert large_blocks_mapped()            # the outer scope still holds it
    assert not large_blocks_mapped()

    torch.manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 255, (6, 100, 130, 3), dtype=np.uint8)
    core = InferenceCore(PropagationNetwork(top_k=50).eval(), FusionNet().eval(), frames, 1, device="cpu")
    seen: list[bool] = []
    core.memory_trace = lambda t, slots: seen.append(large_blocks_mapped())
    mask = torch.zeros(2, 1, 100, 130)
    mask[1, :, 20:50, 20:60] = 1
    mask[0] = 1 - mask[1]
    steps = core.interact_iter(mask, 0)
    next(steps)
    next(steps)
    steps.close()                                # a cancelled pass gives the policy back too
    core.interact(mask, 5)
    assert seen and all(seen)
    assert not large_blocks_mapped()
