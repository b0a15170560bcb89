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


def test_defaults_per_network_follow_the_measured_evidence(native_bf16):
    """Only S2M's bfloat16 met the bar for a default (≤ 0.5 points lost, ≥ 99.5 % of pixels kept on the
    trained stand-ins); propagation and fusion stay float32 on CPU, and CUDA keeps the original's fp16."""
    from util.precision import default_precision
    assert default_precision("cpu") == default_precision("cpu", "propagation") == "float32"
    assert default_precision("cpu", "fusion") == "float32"
    assert default_precision("cpu", "s2m") == "bfloat16"
    assert default_precision("cuda", "s2m") == default_precision("cuda") == "float16"
    with pytest.raises(ValueError, match="unknown network 'fbrs'"):
        default_precision("cpu", "fbrs")


def test_no_reduced_default_without_native_bf16(no_bf16):
    from util.precision import CPU_DEFAULTS, default_precision
    assert {default_precision("cpu", n) for n in CPU_DEFAULTS} == {"float32"}


@pytest.mark.parametrize("overrides, expected", [({}, "bfloat16"), ({"no_amp": True}, "float32"),
                                                 ({"precision": "float32"}, "float32"),
                                                 ({"precision": "bf16"}, "bfloat16"),
                                                 ({"precision": "auto"}, "bfloat16")])
def test_gui_scribbles_run_in_the_measured_default_unless_told(native_bf16, overrides, expected):
    from gui.session import precision_text, resolve_propagation_precision, resolve_scribble_precision
    from tests.helpers_gui import session_args
    args = session_args(**overrides)
    cpu = torch.device("cpu")
    assert resolve_scribble_precision(args, cpu) == expected
    propagation = resolve_propagation_precision(args, cpu)
    assert propagation == ("float32" if overrides.get("precision") in (None, "float32") else "bfloat16")
    # the user is told each network's precision
    text = precision_text(cpu, propagation, False, expected)
    assert text.startswith(f"device cpu: propagation {propagation}") and f"scribbles {expected}" in text
    assert ("clicks float32 (exact)" in text) == (propagation == "float32")


def test_gui_scribbles_on_cuda_follow_the_amp_switch(native_bf16):
    from gui.session import precision_text, resolve_scribble_precision
    from tests.helpers_gui import session_args
    # on CUDA the controller's fp16 autocast covers S2M, which itself stays float32
    assert resolve_scribble_precision(session_args(), torch.device("cuda")) == "float32"
    assert "scribbles float16 autocast, clicks float16 autocast" in precision_text(torch.device("cuda"), "float16", True)
    # without an f-BRS model the line says clicks are off, not which precision they would run in
    assert precision_text(torch.device("cpu"), "float32", False, clicks_available=False).endswith(
        "clicks off (no --fbrs_model)")


def test_s2m_controller_runs_in_its_precision(monkeypatch):
    """S2MController(precision="bfloat16") runs the network under bf16 autocast and returns float32
    probabilities; float32 runs no autocast at all."""
    import numpy as np

    from inference_core.interaction.s2m_controller import S2MController
    from model.s2m.s2m_network import deeplabv3plus_resnet50
    torch.manual_seed(0)
    net = deeplabv3plus_resnet50(num_classes=1, output_stride=16, pretrained_backbone=False).eval()
    import inference_core.interaction.s2m_controller as s2m_controller
    seen, folded = [], s2m_controller.inference_network

    def recording(network):
        def run(x):
            out = folded(network)(x)
            seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
            return out
        return run
    monkeypatch.setattr(s2m_controller, "inference_network", recording)
    image = torch.randn(1, 3, 64, 64)
    prev = torch.zeros(1, 64, 64, dtype=torch.uint8)
    scribbles = np.full((64, 64), 255, np.uint8)
    scribbles[20:24, 10:40] = 1
    outs = {}
    for precision in ("float32", "bfloat16"):
        with torch.inference_mode():
            outs[precision] = S2MController(net, 1, device="cpu", precision=precision).interact(image, prev, scribbles)
    assert seen[0] == (False, torch.float32) and seen[1] == (True, torch.bfloat16)
    assert all(o.dtype == torch.float32 and o.shape == (1, 1, 64, 64) for o in outs.values())
    assert not torch.equal(outs["float32"], outs["bfloat16"])
    with pytest.raises(ValueError, match="precision must be"):
        S2MController(net, 1, precision="fp64")
