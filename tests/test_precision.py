"""util.precision: the one decision of device and precision, and what the user is told about it."""
from __future__ import annotations

import warnings

import pytest
import torch

import util.precision as P
from util.precision import (autocast_dtype, describe_compute, fast_precision, precision_name, resolve_device,
                            resolve_device_precision, resolve_precision)


@pytest.fixture
def native_bf16(monkeypatch):
    """A CPU with AVX-512-BF16."""
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ("avx512_bf16",))


@pytest.fixture
def no_bf16(monkeypatch):
    """A CPU without native bf16 (AVX2 only)."""
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ())


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("alias, name", [("fp32", "float32"), ("FP32", "float32"), ("float32", "float32"),
                                         ("bf16", "bfloat16"), (" bfloat16 ", "bfloat16"),
                                         ("fp16", "float16"), ("float16", "float16")])
def test_aliases(alias, name):
    assert precision_name(alias) == name
    assert autocast_dtype(alias) == {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@pytest.mark.parametrize("bad", ["fp64", "double", "", "half precision"])
def test_unknown_precision_is_one_sentence(bad):
    with pytest.raises(ValueError, match="float32, bfloat16 or float16") as e:
        precision_name(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="auto, float32, bfloat16 or float16"):
        resolve_precision(bad, "cpu")


def test_auto_follows_the_device(native_bf16):
    assert fast_precision("cpu") == "bfloat16"
    assert fast_precision("cuda") == "float16"          # the original's fp16 autocast on CUDA
    assert resolve_precision("auto", "cpu") == "bfloat16"
    assert resolve_precision(None, torch.device("cuda:0")) == "float16"


def test_auto_is_exact_without_native_bf16(no_bf16):
    assert fast_precision("cpu") == "float32"
    assert resolve_precision("auto", "cpu") == "float32"


def test_float16_on_cpu_is_refused(native_bf16):
    with pytest.raises(ValueError, match="float16 needs CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="float16 needs CUDA"):
        resolve_device_precision("cpu", "float16")


def test_emulated_bf16_warns_but_runs(no_bf16):
    with pytest.warns(RuntimeWarning, match="emulated"):
        assert resolve_precision("bf16", "cpu") == "bfloat16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("fp32", "cpu") == "float32"


def test_resolve_device_precision(native_bf16, no_gpu):
    assert resolve_device_precision("cpu", "auto") == (torch.device("cpu"), "bfloat16")
    assert resolve_device_precision(None, "auto") == (torch.device("cpu"), "bfloat16")   # auto device: no GPU
    assert resolve_device_precision("cpu") == (torch.device("cpu"), "float32")          # exact by default
    # --no_amp: float32 whatever was asked for (even a precision the device refuses)
    assert resolve_device_precision("cpu", "auto", no_amp=True) == (torch.device("cpu"), "float32")
    assert resolve_device_precision("cpu", "fp16", no_amp=True) == (torch.device("cpu"), "float32")


@pytest.mark.parametrize("spec, message", [("tpu", "unknown device 'tpu'"), ("cuda", "no CUDA GPU is usable"),
                                           ("cuda:1", "no CUDA GPU is usable")])
def test_bad_devices_are_one_sentence(no_gpu, spec, message):
    with pytest.raises(ValueError, match=message) as e:
        resolve_device_precision(spec, "auto")
    assert "\n" not in str(e.value)


def test_device_aliases(no_gpu):
    assert resolve_device("auto") == resolve_device(None) == resolve_device(" CPU ") == torch.device("cpu")


def test_description_tells_the_user_what_runs(monkeypatch):
    assert describe_compute("cpu", "float32") == "cpu, float32 (exact)"
    assert describe_compute("cpu", "fp32") == "cpu, float32 (exact)"
    assert describe_compute(torch.device("cuda", 0), "fp16") == "cuda:0, float16 (autocast)"
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    assert describe_compute("cpu", "bfloat16") == "cpu, bfloat16 (native AVX-512-BF16)"
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ("amx_bf16", "avx512_bf16"))
    assert describe_compute("cpu", "bf16") == "cpu, bfloat16 (native AMX-BF16 + AVX-512-BF16)"
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ())
    assert describe_compute("cpu", "bf16") == "cpu, bfloat16 (emulated, slower than float32)"


def test_the_core_uses_the_decision(native_bf16):
    """InferenceCore resolves its device and precision here: "auto" is the device's fast precision."""
    import numpy as np

    from inference_core import InferenceCore
    from model.propagation.prop_net import PropagationNetwork
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    core = InferenceCore(PropagationNetwork(), None, frames, 1, device="cpu", precision="auto")
    assert (core.device, core.precision) == (torch.device("cpu"), "bfloat16")
    with pytest.raises(ValueError, match="float16 needs CUDA"):
        InferenceCore(PropagationNetwork(), None, frames, 1, device="cpu", precision="fp16")
