"""The inference core: propagation, difference-aware fusion and the state of one video session.

Semantics are the original MiVOS ``InferenceCore``:

* ``interact(mask, idx)`` stores the user's mask for frame ``idx``, adds its memory to the *certain*
  memory (every interaction so far), then propagates forward and backward up to the nearest other
  interacted frame (exclusive) or the clip's end. Each pass reads a memory bank of the certain memory,
  a frame committed every ``mem_freq`` frames, and the previous frame as a temporary slot
  (:class:`inference_core.memory_bank.PassMemory`).
* When a pass is bounded by an earlier interaction, every frame is *fused*: the FusionNet blends the
  previous round's probabilities with the new propagation, guided by where this interaction changed
  the mask (difference maps transported by the key affinity) and the normalised distances ``[nc, nr]``.
* Results are the per-frame argmax of the probabilities, un-padded.

Shapes: K objects, T frames, (H, W) true size, (H', W') padded to /16, h×w = H'/16×W'/16.
Everything the networks see is computed here; the networks themselves are stateless. The session owns
its state: callers read it through properties and change it only through the methods below.

The propagation network's interface (``model.propagation.prop_net.PropagationNetwork``):
``memorize(frame, masks)``, ``get_query_features(frame)`` (a tuple whose first element is the query
key ``1×Ck×h×w``, cached per frame), ``segment_with_features(keys, values, *features)`` and
``get_attention(mk16, pos, neg, qk16)``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from inference_core.feature_cache import FeatureCache, QueryFeatures
from inference_core.frames import FrameSource, PaddedFrames
from inference_core.memory_bank import CertainMemory, PassMemory
from inference_core.prob_store import ProbStore
from model.aggregate import aggregate_wbg, hard_labels
from model.batchnorm_fold import inference_network
from util.memory import mapped_large_blocks
from util.precision import autocast_dtype, resolve_device, resolve_device_precision
from util.tensor_util import apply_pad, unpad

# cached query features per h×w cell: k16 128 + the query value's part of the decoder 1024 + s8 512·4 +
# s4 256·16 channels
_FEATURE_FLOATS_PER_CELL = 128 + 1024 + 512 * 4 + 256 * 16
# the original's per-profile buffer sizes, in frames
_PROFILE_CACHE_FRAMES = {0: 105, 1: 105, 2: 3, 3: 1}


def default_device() -> torch.device:
    """CUDA when available, else CPU (see :func:`util.precision.resolve_device`)."""
    return resolve_device(None)


def fuse_frame(prop_net: torch.nn.Module, fuse_net: torch.nn.Module, image: torch.Tensor, tc: int, tr: int,
               ti: int, prev: torch.Tensor, curr: torch.Tensor, mk16: torch.Tensor, qk16: torch.Tensor,
               pos_diff: torch.Tensor, neg_diff: torch.Tensor) -> torch.Tensor:
    """Difference-aware fusion of frame ``ti`` between the bounding interaction ``tc`` and the current
    one ``tr``.

    ``image``: frame ``ti`` ``1×3×H'×W'``; ``prev`` / ``curr``: the previous round's and this
    propagation's probabilities ``(K+1)×1×H'×W'``; ``mk16``: memory key of the interaction
    ``K×Ck×1×h×w``; ``qk16``: query key of frame ``ti`` ``1×Ck×h×w``; ``pos_diff`` / ``neg_diff``:
    where the interaction added / removed probability ``(K+1)×1×H'×W'``. Returns the fused
    ``(K+1)×1×H'×W'`` float32.
    """
    assert tc < ti < tr or tr < ti < tc
    k = prev.shape[0] - 1
    nc = abs(tc - ti) / abs(tc - tr)
    nr = abs(tr - ti) / abs(tc - tr)
    dist = torch.tensor([[nc, nr]], dtype=torch.float32, device=image.device).expand(k, 2)
    # all objects in one batch: attention of each object's memory key and difference maps
    # (K×2×H'×W'), then one FusionNet call (the original loops over objects; same numbers)
    attn = prop_net.get_attention(mk16, pos_diff[1:], neg_diff[1:], qk16)
    fused = torch.sigmoid(fuse_net(image.expand(k, -1, -1, -1), prev[1:], curr[1:], attn, dist)).float()
    return aggregate_wbg(fused, keep_bg=True)


def _query_features_of(prop_net: torch.nn.Module, frames: PaddedFrames) -> Callable[[int], QueryFeatures]:
    """``t -> prop_net.get_query_features(frame t)`` (what the session's feature cache computes)."""
    def compute(t: int) -> QueryFeatures:
        return prop_net.get_query_features(frames.get(t))
    return compute


class InferenceCore:
    """One interactive video session.

    The networks are moved (and converted to channels_last) *in place*: build the core outside
    ``torch.inference_mode()`` if the same modules are trained afterwards. An eval-mode propagation
    network runs through its BatchNorm-folded view (``with_folded_batchnorm``, built from the weights it
    has when the core is built and cached on the network).

    Args:
        prop_net: ``model.propagation.prop_net.PropagationNetwork`` (eval mode).
        fuse_net: ``model.fusion_net.FusionNet`` or None (then no fusion is possible: a pass bounded by
            an earlier interaction keeps the plain propagation).
        images: ImageNet-normalised float tensor ``1×T×3×H×W`` (the original's input), or a frame
            source (``len()`` and ``[t] -> H×W×3 uint8 RGB``), e.g. a numpy array ``T×H×W×3``.
        num_objects: K ≥ 1.
        mem_profile: 0–3, where data lives (0: images + results on ``device``; 1: results only; 2, 3:
            both on CPU with small caches). Never changes a result.
        mem_freq: period (frames) at which propagated frames are committed to the memory bank.
        device: where the networks run (default: CUDA if available, else CPU).
        feature_cache_bytes: byte budget of the query-feature cache (default: the original's frame
            count for the profile — 105/105/3/1 frames — converted to bytes).
        prob_storage: ``"float32"`` (exact, default) or ``"uint16"`` (half the memory, ≤7.7e-6 error).
        channels_last: keep the networks' weights in NHWC layout (faster convolutions on CPU and GPU;
            changes only the floating-point summation order).
        precision: ``"float32"`` (exact, default), ``"bfloat16"`` (CPU with AVX-512-BF16/AMX, or CUDA),
            ``"float16"`` (CUDA) or ``"auto"`` (the fast one for the device, see util/precision.py): the
            networks run under autocast; probabilities stay float32.
        prob_spill_dir: a folder (e.g. the GUI's workspace) where probabilities of frames outside the
            working range are written, bit for bit, so that a full pass over a long clip keeps only
            ``prob_ram_bytes`` of probabilities in memory. None (default): all in memory.
        prob_ram_bytes: in-memory budget of the probabilities when ``prob_spill_dir`` is given.
        memory_spill_dir: a folder where the memory bank of a propagation pass writes the values of
            the frames it commits beyond ``memory_ram_bytes``, bit for bit (the keys stay in memory);
            the readout then reads back only the rows its top-k selection needs. Needs a top-k network
            and ``device`` CPU. None (default): the whole bank in memory.
        memory_ram_bytes: in-memory budget of a pass's memory values when ``memory_spill_dir`` is given.
    """

    def __init__(self, prop_net: torch.nn.Module, fuse_net: torch.nn.Module | None,
                 images: torch.Tensor | FrameSource | Sequence[np.ndarray], num_objects: int,
                 mem_profile: int = 0, mem_freq: int = 5, device: torch.device | str | None = None,
                 *, feature_cache_bytes: int | None = None, prob_storage: str = "float32",
                 precision: str = "float32", channels_last: bool = True,
                 prob_spill_dir: str | os.PathLike | None = None, prob_ram_bytes: int = 256 * 2 ** 20,
                 memory_spill_dir: str | os.PathLike | None = None, memory_ram_bytes: int = 256 * 2 ** 20):
        if not isinstance(num_objects, (int, np.integer)) or num_objects < 1:
            raise ValueError(f"num_objects must be an integer ≥ 1, got {num_objects!r}")
        if mem_freq < 1:
            raise ValueError(f"mem_freq must be ≥ 1, got {mem_freq}")
        if mem_profile not in _PROFILE_CACHE_FRAMES:
            raise ValueError(f"mem_profile must be 0, 1, 2 or 3, got {mem_profile!r}")
        self.device, self.precision = resolve_device_precision(device, precision)
        self._autocast_dtype = autocast_dtype(self.precision)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        # BatchNorm folded into the encoders' convolutions (same numbers up to float rounding, see
        # model/batchnorm_fold.py); a network without that view (or in training mode) runs as it is
        self._prop_net = inference_network(prop_net.to(self.device, memory_format=layout))
        self._fuse_net = fuse_net.to(self.device, memory_format=layout) if fuse_net is not None else None
        self.mem_profile = mem_profile
        self.mem_freq = mem_freq
        self._k = int(num_objects)

        data_on_device = mem_profile == 0
        self.result_dev = self.device if mem_profile in (0, 1) else torch.device("cpu")
        self._frames = PaddedFrames(images, self.device, keep_all_on_device=data_on_device)
        self.t, self.h, self.w = self._frames.t, self._frames.h, self._frames.w
        self.nh, self.nw = self._frames.nh, self._frames.nw
        self.pad = self._frames.pad
        self.kh, self.kw = self.nh // 16, self.nw // 16

        if feature_cache_bytes is None:
            frames = _PROFILE_CACHE_FRAMES[mem_profile]
            feature_cache_bytes = frames * _FEATURE_FLOATS_PER_CELL * self.kh * self.kw * 4
        # the cache computes through a function that does not hold the session: a bound method would
        # make session ↔ cache a reference cycle, and a closed session's gigabytes (cached features,
        # probabilities) would then stay resident until Python's cycle collector happened to run
        self._query_cache = FeatureCache(_query_features_of(self._prop_net, self._frames), feature_cache_bytes)

        # the one place this session's probabilities live
        self._probs = ProbStore(self._k, self.t, self.nh, self.nw, self.result_dev, prob_storage,
                                spill_dir=prob_spill_dir, ram_bytes=prob_ram_bytes)
        # padded hard masks on the CPU; np_masks is an un-padded, read-only *view* of them (no copy)
        self._masks = torch.zeros((self.t, 1, self.nh, self.nw), dtype=torch.uint8)
        self._np_masks: np.ndarray = unpad(self._masks.numpy(), self.pad)[:, 0]
        self._np_masks.flags.writeable = False
        self._stale_masks: set[int] = set()

        if memory_ram_bytes < 0:
            raise ValueError(f"memory_ram_bytes must be ≥ 0, got {memory_ram_bytes}")
        if self.device.type != "cpu" or getattr(prop_net, "top_k", 50) is None:
            # the file path is for CPU memory, and only the top-k readout reads rows selectively
            memory_spill_dir = None
        self._memory_spill = {"spill_dir": memory_spill_dir, "ram_bytes": memory_ram_bytes}
        self._memory: PassMemory | None = None   # the bank of the pass running now
        self._memory_bytes = (0, 0, 0)            # (RAM, file, RAM capacity) bytes of the latest pass's values

        self._interacted: set[int] = set()
        self._certain = CertainMemory()
        self._interaction_masks: list[tuple[int, torch.Tensor]] = []  # for add_object()
        self._pos_mask_diff: torch.Tensor | None = None
        self._neg_mask_diff: torch.Tensor | None = None
        # optional hook: called as trace(frame, [memory frames]) for every propagated frame
        self.memory_trace: Callable[[int, list[int]], None] | None = None

    # ------------------------------------------------------------------ state callers read
    @property
    def num_objects(self) -> int:
        """K, the number of objects (the one count of the session; grows with :meth:`add_object`)."""
        return self._k

    @property
    def k(self) -> int:
        """The original's name of :attr:`num_objects`."""
        return self._k

    @property
    def prop_net(self) -> torch.nn.Module:
        return self._prop_net

    @property
    def fuse_net(self) -> torch.nn.Module | None:
        return self._fuse_net

    @property
    def prob(self) -> torch.Tensor:
        """The original's ``prob``: ``(K+1)×T×1×H'×W'`` float32 (materialised; prefer :meth:`get_prob`)."""
        return self._probs.dense()

    @property
    def masks(self) -> torch.Tensor:
        """The original's ``masks``: padded hard label maps ``T×1×H'×W'`` uint8 (CPU). Read it; change
        it through :meth:`interact`, :meth:`update_mask_only`, :meth:`clear_mask`, :meth:`restore_frame`."""
        return self._masks

    @property
    def np_masks(self) -> np.ndarray:
        """The original's ``np_masks``: un-padded hard label maps ``T×H×W`` uint8, a live read-only
        view of :attr:`masks` (the same object every time)."""
        return self._np_masks

    @property
    def interacted(self) -> frozenset[int]:
        """The original's ``interacted``: frames the user has interacted with."""
        return frozenset(self._interacted)

    @property
    def certain_frames(self) -> list[int]:
        """Frame of each entry of the certain memory, in interaction order (a frame interacted twice
        appears twice)."""
        return list(self._certain.frames)

    def is_propagated(self, t: int) -> bool:
        """Whether frame ``t`` holds probabilities (from an interaction, a propagation or a restore)."""
        self._check_frame(t)
        return self._probs.is_set(t)

    def get_prob(self, t: int) -> torch.Tensor:
        """Probabilities of frame ``t``, background included: ``(K+1)×1×H'×W'`` float32 (padded)."""
        self._check_frame(t)
        return self._probs.get(t)

    def get_image(self, t: int) -> torch.Tensor:
        """Normalised, padded frame ``t``: ``1×3×H'×W'`` on ``device``."""
        self._check_frame(t)
        return self._frames.get(t)

    def get_mask(self, t: int) -> torch.Tensor:
        """Hard label map of frame ``t``, padded: ``1×H'×W'`` uint8 (CPU)."""
        self._check_frame(t)
        return self._masks[t]

    @property
    def interacted_frames(self) -> frozenset[int]:
        """Frames the user has interacted with (the stops of every propagation pass)."""
        return frozenset(self._interacted)

    @property
    def prob_disk_bytes(self) -> int:
        """Bytes of probabilities spilled to ``prob_spill_dir`` (0 without spilling)."""
        return self._probs.disk_bytes

    @property
    def memory_disk_bytes(self) -> int:
        """Bytes of memory values the current (or latest) pass spilled to ``memory_spill_dir``."""
        return self._memory.disk_bytes if self._memory is not None else self._memory_bytes[1]

    @property
    def memory_value_bytes(self) -> int:
        """Bytes of memory values the current (or latest) pass holds in RAM."""
        return self._memory.ram_bytes if self._memory is not None else self._memory_bytes[0]

    @property
    def memory_value_capacity_bytes(self) -> int:
        """Bytes of memory values the current (or latest) pass may hold in RAM at most (the whole pass
        without ``memory_spill_dir``, about ``memory_ram_bytes`` with it)."""
        return self._memory.ram_capacity_bytes if self._memory is not None else self._memory_bytes[2]

    @property
    def prob_bytes(self) -> int:
        """Bytes held by the stored probabilities."""
        return self._probs.nbytes

    @property
    def feature_bytes(self) -> int:
        """Bytes held by the query-feature cache."""
        return self._query_cache.nbytes

    @property
    def feature_cache_frames(self) -> int:
        """Frames whose query features are cached now."""
        return len(self._query_cache)

    # ------------------------------------------------------------------ operations for callers
    def restore_frame(self, t: int, prob: torch.Tensor) -> None:
        """Put saved probabilities back for frame ``t`` (e.g. a resumed session or a given first-frame
        mask): ``prob`` is ``(K+1)×1×H×W``, background first, padded or not. The displayed mask becomes
        its argmax; the memory is untouched (the next ``interact`` diffs against it)."""
        self._check_frame(t)
        prob = self._prepare_mask(prob, "restored probabilities")
        self._probs.set(t, prob)
        self._stale_masks.add(t)
        self._refresh_masks()

    def mark_interacted(self, frames: Iterable[int]) -> None:
        """Record ``frames`` as interacted (a resumed session): they bound later propagation passes."""
        frames = [int(t) for t in frames]
        for t in frames:
            self._check_frame(t)
        self._interacted.update(frames)

    def release_frame(self, t: int) -> None:
        """Forget the probabilities of frame ``t`` (they read as the initial state again). For one-way
        propagation that writes each result out as soon as it is final: memory stays O(1) in frames."""
        self._check_frame(t)
        self._probs.release(t)

    # ------------------------------------------------------------------ validation
    def _check_frame(self, idx: int) -> None:
        if not isinstance(idx, (int, np.integer)) or not 0 <= idx < self.t:
            raise IndexError(f"frame index {idx!r} is outside the clip (0..{self.t - 1})")

    def _prepare_mask(self, mask: torch.Tensor, what: str) -> torch.Tensor:
        """Check a background-included mask and return it padded on ``device``: ``(K+1)×1×H'×W'``."""
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask)
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{what}: expected a (K+1)×1×H×W tensor, got {type(mask).__name__}")
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)
        if mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"{what}: expected shape (K+1)×1×H×W, got {tuple(mask.shape)}")
        if mask.shape[0] != self._k + 1:
            raise ValueError(f"{what}: has {mask.shape[0]} channels but the session has {self._k} object(s); "
                             f"expected {self._k + 1} (background first)")
        size = tuple(mask.shape[-2:])
        mask = mask.to(self.device, torch.float32)
        if size == (self.nh, self.nw):
            return mask
        if size == (self.h, self.w):
            return apply_pad(mask, self.pad)
        raise ValueError(f"{what}: mask is {size[1]}×{size[0]} but the clip is {self.w}×{self.h} "
                         f"(padded {self.nw}×{self.nh})")

    # ------------------------------------------------------------------ features
    def _segment(self, keys: torch.Tensor, values: torch.Tensor | list, query: QueryFeatures) -> torch.Tensor:
        """Per-object sigmoid probabilities ``K×1×H'×W'`` (float32) of a query frame; ``values`` is
        what :meth:`PassMemory.readout` returns (a tensor, or K row sources when part is spilled)."""
        return self._prop_net.segment_with_features(keys, values, *query).float()

    @contextlib.contextmanager
    def _compute(self) -> Iterator[None]:
        """No autograd, and autocast to the session's precision when it is not float32."""
        with torch.inference_mode():
            if self._autocast_dtype is None:
                yield
            else:
                with torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype):
                    yield

    # ------------------------------------------------------------------ interaction
    def pass_bounds(self, idx: int) -> tuple[int, int]:
        """(backward stop, forward stop) of a pass from ``idx``: the nearest other interacted frames,
        or -1 / T. The stops themselves are never touched."""
        forward = min([ti for ti in self._interacted if ti > idx] + [self.t])
        backward = max([ti for ti in self._interacted if ti < idx] + [-1])
        return backward, forward

    def interact(self, mask: torch.Tensor, idx: int, total_cb: Callable[[int], None] | None = None,
                 step_cb: Callable[[], None] | None = None) -> np.ndarray:
        """Interact → propagate → fuse. ``mask``: ``(K+1)×1×H×W`` one-hot/probabilities, background
        first (padded or not). Returns the hard masks of every frame, ``T×H×W`` uint8."""
        gen = self.interact_iter(mask, idx)
        first = True
        for done, total in gen:
            if first:
                first = False
                if total_cb is not None and total > 0:
                    total_cb(total)
                continue
            if step_cb is not None:
                step_cb()
        return self._np_masks

    def interact_iter(self, mask: torch.Tensor, idx: int) -> Iterator[tuple[int, int]]:
        """Generator form of :meth:`interact`: yields ``(0, total)`` once the interaction is stored,
        then ``(frames_done, total)`` after every propagated frame. Closing it early cancels the rest
        of the propagation; the masks are then brought up to date with what was computed."""
        self._check_frame(idx)
        if self.t < 2:
            raise ValueError("the clip has a single frame: there is nothing to propagate to "
                             "(use update_mask_only to set its mask)")
        mask = self._prepare_mask(mask, "interact mask")
        # frame-sized tensors freed every frame would otherwise fragment the C heap and stay resident
        # over a long pass (gigabytes at 1000 frames): while the pass runs, large blocks are mapped
        with mapped_large_blocks():
            # inference/autocast modes are entered around each step, never across a yield, so the
            # caller's code between frames runs in its own (grad, precision) mode
            try:
                with self._compute():
                    key_k, _ = self._store_interaction(mask, idx)
                backward_stop, forward_stop = self.pass_bounds(idx)
                total = max(forward_stop - backward_stop - 2, 0)
                done = 0
                yield 0, total
                for stop, step in ((forward_stop, +1), (backward_stop, -1)):
                    frames = self._pass(key_k, idx, stop, step)
                    try:
                        while True:
                            with self._compute():
                                ti = next(frames, None)
                            if ti is None:
                                break
                            done += 1
                            yield done, total
                    finally:
                        frames.close()   # a cancelled pass releases its memory bank now
            finally:
                self._refresh_masks()

    def _store_interaction(self, mask: torch.Tensor, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._interacted.add(idx)
        diff = mask - self._probs.get(idx, self.device)
        self._pos_mask_diff = diff.clamp(0, 1)
        self._neg_mask_diff = (-diff).clamp(0, 1)
        self._probs.set(idx, mask)
        self._stale_masks.add(idx)
        key_k, key_v = self._prop_net.memorize(self._frames.get(idx), mask[1:])
        self._certain.append(idx, key_k, key_v)
        self._interaction_masks.append((idx, mask.to(self.result_dev)))
        return key_k, key_v

    def _pass(self, key_k: torch.Tensor, idx: int, stop: int, step: int) -> Iterator[int]:
        """Propagate from ``idx`` towards ``stop`` (exclusive); yields each processed frame."""
        frames = range(idx + step, stop, step)
        if len(frames) == 0:
            return
        memory = self._memory = PassMemory.from_certain(self._certain, idx, frames, self.mem_freq,
                                                        **self._memory_spill)
        try:
            yield from self._propagate(memory, key_k, idx, stop, frames)
        finally:
            # the bank lives for one pass: free its memory and its file now, keep its byte counts
            self._memory_bytes = (memory.ram_bytes, memory.disk_bytes, memory.ram_capacity_bytes)
            self._memory = None
            memory.close()

    def _propagate(self, memory: PassMemory, key_k: torch.Tensor, idx: int, stop: int,
                   frames: range) -> Iterator[int]:
        fuse = stop not in (-1, self.t) and self._fuse_net is not None
        for ti in frames:
            keys, values = memory.readout()
            if self.memory_trace is not None:
                self.memory_trace(ti, memory.frames_in_readout())
            query = self._query_cache.get(ti)
            out = aggregate_wbg(self._segment(keys, values, query), keep_bg=True)
            if memory.wants(ti):
                # memory holds the propagated (pre-fusion) result
                mk, mv = self._prop_net.memorize(self._frames.get(ti), out[1:])
                memory.add(ti, mk, mv)
            if fuse:
                # the query key is the first cached feature
                out = fuse_frame(self._prop_net, self._fuse_net, self._frames.get(ti), stop, idx, ti,
                                 self._probs.get(ti, self.device), out, key_k, query[0],
                                 self._pos_mask_diff, self._neg_mask_diff)
            self._probs.set(ti, out)
            self._stale_masks.add(ti)
            yield ti

    def _refresh_masks(self) -> None:
        """Recompute the hard masks of every frame whose probabilities (or displayed mask) changed."""
        for t in sorted(self._stale_masks):
            self._masks[t] = hard_labels(self._probs.get(t)).to("cpu", torch.uint8)
        self._stale_masks.clear()

    def update_mask_only(self, prob_mask: torch.Tensor, idx: int) -> np.ndarray:
        """Show an interaction's result on frame ``idx`` without propagating: ``masks[idx] =
        argmax(prob_mask)``; ``prob`` and the memory are untouched (the next ``interact`` recomputes
        this frame from ``prob``, as the original). Returns ``np_masks`` (updated in place)."""
        self._check_frame(idx)
        prob_mask = self._prepare_mask(prob_mask, "update_mask_only mask")
        self._masks[idx] = hard_labels(prob_mask).to("cpu", torch.uint8)
        self._stale_masks.add(idx)
        return self._np_masks

    def clear_mask(self, idx: int) -> None:
        """'Reset frame': zero the displayed mask of ``idx`` (``prob`` is kept for the next diff)."""
        self._check_frame(idx)
        self._masks[idx] = 0
        self._stale_masks.add(idx)

    # ------------------------------------------------------------------ session changes
    def add_object(self) -> int:
        """Grow the session by one (empty) object; returns the new object's id (= new K)."""
        with self._compute():
            self._k += 1
            self._probs.add_object()
            old = self._interaction_masks
            self._interaction_masks = []
            self._certain.clear()
            # every object's memory encodes the others' masks too, so re-encode the interactions
            for t, m in old:
                m = torch.cat([m, torch.zeros_like(m[:1])], 0)
                k16, v16 = self._prop_net.memorize(self._frames.get(t), m[1:].to(self.device))
                self._certain.append(t, k16, v16)
                self._interaction_masks.append((t, m))
            if self._pos_mask_diff is not None:
                z = torch.zeros_like(self._pos_mask_diff[:1])
                self._pos_mask_diff = torch.cat([self._pos_mask_diff, z], 0)
                self._neg_mask_diff = torch.cat([self._neg_mask_diff, z], 0)
        return self._k
