"""The memory bank's cell-major values and their spill file: no copy on readout, the same numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_core.memory_bank import PassMemory
from model.propagation.memory import EvalMemoryReader, top_k_readout

K, CK, CV, H, W = 2, 16, 24, 5, 7


def _frame(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(K, CK, 1, H, W, generator=g), torch.randn(K, CV, 1, H, W, generator=g)


def _bank(g: torch.Generator, steps: int, **spill) -> PassMemory:
    """A forward pass of ``steps`` frames from frame 0, base of two entries, mem_freq 2."""
    keys, values = torch.randn(K, CK, 2, H, W, generator=g), torch.randn(K, CV, 2, H, W, generator=g)
    bank = PassMemory(keys, values, [0, 0], 0, range(1, 40), 2, **spill)
    for t in range(1, steps + 1):
        bank.add(t, *_frame(g))
    return bank


def test_readout_table_is_a_view_of_the_bank():
    bank = _bank(torch.Generator().manual_seed(0), 5)
    keys, values = bank.readout()
    for obj in range(K):
        mv = values[obj:obj + 1].reshape(1, CV, -1)            # what EvalMemoryReader hands on
        table = mv.transpose(1, 2).contiguous()                # what top_k_readout gathers from
        assert table.data_ptr() == mv.data_ptr()               # no copy
        assert bank.values.untyped_storage().data_ptr() == table.untyped_storage().data_ptr()
    # bitwise the same readout as the channel-major layout, for every object
    qk = torch.randn(1, CK, H, W, generator=torch.Generator().manual_seed(1))
    reader = EvalMemoryReader(top_k=20)
    with torch.no_grad():
        for obj in range(K):
            cell_major = reader(keys[obj:obj + 1], values[obj:obj + 1], qk)
            channel_major = reader(keys[obj:obj + 1], values[obj:obj + 1].contiguous(), qk)
            assert torch.equal(cell_major, channel_major)
    # the dense (autograd / no top-k) path is unchanged too
    dense = EvalMemoryReader(top_k=None)
    assert torch.equal(dense(keys[:1], values[:1], qk), dense(keys[:1], values[:1].contiguous(), qk))


@pytest.mark.parametrize("ram_slots", [0, 1, 3])
def test_spilled_bank_reads_the_same_rows(tmp_path, ram_slots):
    slot_bytes = K * H * W * CV * 4
    steps = 11
    plain = _bank(torch.Generator().manual_seed(2), steps)
    spilled = _bank(torch.Generator().manual_seed(2), steps, spill_dir=tmp_path, ram_bytes=ram_slots * slot_bytes)
    assert spilled.disk_bytes > 0 and spilled.ram_bytes <= (ram_slots + 1) * slot_bytes
    assert list(tmp_path.iterdir()) == []                      # anonymous file
    # an uncommitted (temporary) frame is read too
    assert not spilled.prev_committed
    keys, values = plain.readout()
    skeys, sources = spilled.readout()
    assert torch.equal(keys, skeys) and isinstance(sources, list) and len(sources) == K
    g = torch.Generator().manual_seed(3)
    qk = torch.randn(1, CK, H * W, generator=g)
    for obj in range(K):
        rows = values[obj].permute(1, 2, 3, 0).reshape(-1, CV)
        assert sources[obj].num_rows == rows.shape[0]
        picks = torch.randint(0, rows.shape[0], (500,), generator=g)
        assert torch.equal(sources[obj].gather_rows(picks), rows[picks])
        mk = keys[obj:obj + 1].reshape(1, CK, -1)
        mv = values[obj:obj + 1].reshape(1, CV, -1)
        for chunk_bytes in (1 << 26, 4096):
            assert torch.equal(top_k_readout(mk, mv, qk, 20, chunk_bytes=chunk_bytes),
                               top_k_readout(mk, sources[obj], qk, 20, chunk_bytes=chunk_bytes))
    ck, cv = plain.committed()
    sk, sv = spilled.committed()
    assert torch.equal(ck, sk) and torch.equal(cv, sv)
    spilled.close()


def test_core_with_memory_spill_is_bit_identical(tmp_path, seeded_prop_net, seeded_checkpoints):
    from inference_core import InferenceCore
    from model.factory import load_fusion

    fuse = load_fusion(seeded_checkpoints["fusion"], "cpu")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (14, 100, 130, 3), dtype=np.uint8)
    mask = torch.zeros(3, 1, 100, 130)
    mask[1, :, 20:50, 20:60] = 1
    mask[2, :, 60:90, 70:120] = 1
    mask[0] = 1 - mask[1:].sum(0)
    cores = [InferenceCore(seeded_prop_net, fuse, frames, 2, device="cpu", mem_freq=2),
             InferenceCore(seeded_prop_net, fuse, frames, 2, device="cpu", mem_freq=2,
                           memory_spill_dir=tmp_path, memory_ram_bytes=0)]
    disk = []
    for core in cores:
        core.interact(mask, 0)
        disk.append(core.memory_disk_bytes)
        core.interact(mask, 13)
    assert disk[0] == 0 and disk[1] > 0
    assert cores[1].memory_value_bytes < disk[1]
    for t in range(14):
        assert torch.equal(cores[0].get_prob(t), cores[1].get_prob(t))
    assert np.array_equal(cores[0].np_masks, cores[1].np_masks)
    assert list(tmp_path.iterdir()) == []


def test_spilled_rows_in_runs_and_gaps(tmp_path):
    """Consecutive rows, small gaps (read through a scratch buffer), large gaps, repeats, any order."""
    plain = _bank(torch.Generator().manual_seed(4), 30)
    spilled = _bank(torch.Generator().manual_seed(4), 30, spill_dir=tmp_path, ram_bytes=0)
    _, values = plain.readout()
    _, sources = spilled.readout()
    n = sources[1].num_rows
    rows = values[1].permute(1, 2, 3, 0).reshape(-1, CV)
    picks = torch.tensor([5, 0, 1, 2, 3, 9, 10, 15, 40, 41, 41, 3, n - 1, 100, 104, 109, 200, 201, 300, n - 2])
    assert torch.equal(sources[1].gather_rows(picks), rows[picks])
    everything = torch.arange(n).flip(0)
    assert torch.equal(sources[1].gather_rows(everything), rows[everything])
    every_other = torch.arange(0, n, 2)                    # more gaps than one preadv takes
    assert torch.equal(sources[1].gather_rows(every_other), rows[every_other])
    spilled.close()
