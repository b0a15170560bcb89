"""Inference copies of networks with every BatchNorm folded into the convolution before it.

In eval mode a BatchNorm after a convolution is an affine map per channel, so it can be merged into
the convolution's weights and bias (``torch.fx``'s ``fuse``). The copy computes the same function
with one pass over each activation less: on CPU the separate BatchNorm passes are ~15 % of an
encoder's time in float32 and bfloat16 alike (480p, 2 threads, AVX-512). The numbers are equal up to
float rounding (a few 1e-6 relative: the folded weights are rounded once more), not bitwise.

The one place that folds: the propagation encoders (``PropagationEncoders.with_folded_batchnorm``),
the S2M network (``DeepLabV3Plus.with_folded_batchnorm``) and f-BRS's fast feature extractor use
:func:`fold_batchnorm`; inference loops get the folded view through :func:`inference_network`.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
from torch import nn


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` (which must be traceable by ``torch.fx``) in which every
    ``Conv2d → BatchNorm2d`` pair is one ``Conv2d``; ``module`` itself is left unchanged.

    The copy's parameters do not require grad, and its convolution weights keep the source's memory
    format (channels_last stays channels_last). It is built from the current weights: later changes
    to ``module`` are not seen by the copy.
    """
    from torch.fx.experimental.optimization import fuse  # deep-copies, then folds each conv+BN pair

    if module.training:
        raise ValueError("fold_batchnorm needs an eval-mode module (BatchNorm uses batch statistics in training)")
    channels_last = any(m.weight.is_contiguous(memory_format=torch.channels_last) and m.weight.dim() == 4
                        and not m.weight.is_contiguous()
                        for m in module.modules() if isinstance(m, nn.Conv2d))
    folded = fuse(module).eval()
    _sum_into_convolution_outputs(folded)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


def add_into_first(fresh: torch.Tensor, other: torch.Tensor | float) -> torch.Tensor:
    """``fresh + other``, written into ``fresh`` when that is the same tensor (same shape and dtype as
    the sum). Only for a ``fresh`` that nothing else reads: a convolution's output with one user."""
    if (isinstance(other, torch.Tensor) and torch.broadcast_shapes(fresh.shape, other.shape) == fresh.shape
            and torch.result_type(fresh, other) == fresh.dtype):
        return fresh.add_(other)
    return fresh + other


def _sum_into_convolution_outputs(folded: nn.Module) -> None:
    """Make the traced residual sums in place again.

    ``torch.fx`` records ``out += identity`` as ``out = out + identity`` (a proxy has no in-place
    add), so every residual block of a folded copy would write its sum into a new tensor: at 480p a
    new 53 MB activation per block, faulted in page by page, ~3× the time of adding into the
    convolution output just computed. The sum is the same either way, bit for bit.
    """
    graph = getattr(folded, "graph", None)
    if graph is None:
        return
    modules = dict(folded.named_modules())
    changed = False
    for node in graph.nodes:
        if node.op != "call_function" or node.target is not operator.add or len(node.args) != 2 or node.kwargs:
            continue
        first = node.args[0]
        if (isinstance(first, torch.fx.Node) and first.op == "call_module" and len(first.users) == 1
                and isinstance(modules.get(first.target), nn.Conv2d)):
            node.target = add_into_first
            changed = True
    if changed:
        folded.recompile()


def cached_inference_view(net: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` (an inference view of ``net``), cached on ``net`` and rebuilt when any of its weights
    changes: a load or an optimiser step (both bump a tensor's version), or a move to another device,
    dtype or memory format (new storage)."""
    signature = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in net.state_dict(keep_vars=True).values())
    cached = net.__dict__.pop("_inference_view", None)   # popped: build() may copy net, never its cache
    if cached is not None and cached[0] == signature:
        net.__dict__["_inference_view"] = cached
        return cached[1]
    view = build()
    net.__dict__["_inference_view"] = (signature, view)
    return view


def inference_network(net: nn.Module) -> nn.Module:
    """The network an inference loop should call: ``net.with_folded_batchnorm()`` when ``net``
    offers it and is in eval mode, else ``net`` itself (e.g. a network being trained, a stand-in
    with another interface, or the benchmark's original compute path)."""
    fold = getattr(net, "with_folded_batchnorm", None)
    if fold is None or net.training:
        return net
    return fold()
