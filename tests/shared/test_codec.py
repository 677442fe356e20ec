"""Round trips are exact; every kind of malformed body is refused with a named reason."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from shared.aggregation import initial_optimizer_state
from shared.codec import (
    CodecError,
    OptimizerState,
    ResultLayout,
    decode_partial_snapshot,
    decode_result,
    decode_snapshot,
    encode_result,
    encode_snapshot,
    max_result_bytes,
    select_snapshot,
)
from shared.models import ModelConfig, StateSpec
from shared.strategies import Synchronous
from shared.unit_result import UnitMetrics, UnitResult


@pytest.fixture
def spec(config: ModelConfig) -> StateSpec:
    return StateSpec.from_config(config)


@pytest.fixture
def layout(spec: StateSpec) -> ResultLayout:
    """A synchronous G phase's result: G's gradients and every buffer."""
    return Synchronous(0, 64, 100).layout(3, spec)


@pytest.fixture
def result(layout: ResultLayout) -> UnitResult:
    rng = torch.Generator().manual_seed(0)
    return UnitResult(
        kind=layout.kind,
        iteration=3,
        num_samples=320,
        tensors={k: torch.randn(s, generator=rng) for k, s in layout.tensors.items()},
        buffers={k: torch.rand(s, generator=rng) for k, s in layout.buffers.items()},
        metrics=UnitMetrics(g_loss=2.5, d_loss=0.75, d_real_accuracy=0.8, d_fake_accuracy=0.9),
    )


def test_result_round_trip_is_exact(result: UnitResult, layout: ResultLayout) -> None:
    decoded = decode_result(encode_result(result), layout)
    assert (decoded.kind, decoded.iteration, decoded.num_samples) == ("g_phase", 3, 320)
    assert decoded.metrics == result.metrics
    for name, tensor in result.tensors.items():
        assert torch.equal(decoded.tensors[name], tensor), name
    for name, tensor in result.buffers.items():
        assert torch.equal(decoded.buffers[name], tensor), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_results_decode_to_float32_within_tolerance(result, layout, dtype):
    body = encode_result(result, dtype)
    assert len(body) < 0.55 * len(encode_result(result))
    decoded = decode_result(body, layout)
    tolerance = {torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
    for name, tensor in result.tensors.items():
        assert decoded.tensors[name].dtype == torch.float32
        torch.testing.assert_close(decoded.tensors[name], tensor, rtol=tolerance, atol=1e-4)


def test_snapshot_round_trip_with_and_without_optimizer(weights, spec: StateSpec) -> None:
    params = {k: weights[k] for k in spec.parameters}
    state = initial_optimizer_state(params)
    state.step = 7
    state.exp_avg = {k: v + 1 for k, v in state.exp_avg.items()}
    full = decode_snapshot(encode_snapshot(7, weights, state, {"run_id": "2"}), spec)
    assert full.iteration == 7 and full.metadata["run_id"] == "2"
    assert full.optimizer is not None and full.optimizer.step == 7
    assert all(torch.equal(full.optimizer.exp_avg[k], state.exp_avg[k]) for k in params)
    assert all(torch.equal(full.weights[k], weights[k]) for k in weights)
    light = decode_snapshot(encode_snapshot(7, weights), spec)
    assert light.optimizer is None
    assert all(torch.equal(light.weights[k], weights[k]) for k in weights)


def test_the_same_values_always_encode_to_the_same_bytes(weights, spec, result) -> None:
    """An ETag is a hash of the bytes, and a restarted coordinator proves its replay by
    comparing ETags: so equal states must give equal bytes, call after call. (The
    safetensors library writes metadata in a random order; 20 encodings of a 2-key
    header all agreeing by chance has odds of 2**-19.)"""
    params = {k: weights[k] for k in spec.parameters}
    state = initial_optimizer_state(params)
    for encode in (
        lambda: encode_snapshot(5, weights),
        lambda: encode_snapshot(5, weights, state, {"run_id": "1", "seed": "9"}),
        lambda: select_snapshot(encode_snapshot(5, weights), ["generator"]),
        lambda: encode_result(result),
    ):
        assert len({encode() for _ in range(20)}) == 1


def test_a_part_of_a_snapshot_holds_one_network_and_every_buffer(weights, spec) -> None:
    whole = encode_snapshot(4, weights)
    for network in ("generator", "discriminator"):
        part = select_snapshot(whole, [network])
        assert len(part) < 0.6 * len(whole)
        decoded = decode_partial_snapshot(part, spec, [network])
        assert decoded.iteration == 4
        expected = {k for k in spec.parameters if k.startswith(network)} | spec.buffers.keys()
        assert decoded.weights.keys() == expected
        assert all(torch.equal(decoded.weights[k], weights[k]) for k in expected)
        with pytest.raises(CodecError, match="missing"):
            decode_partial_snapshot(part, spec, ["generator", "discriminator"])


def test_snapshot_with_outer_momentum_only(weights, spec: StateSpec) -> None:
    """A local-steps checkpoint: outer momentum, no Adam moments (and half the bytes)."""
    params = {k: weights[k] for k in spec.parameters}
    state = initial_optimizer_state(params, adam=False)
    state.momentum = {k: v * 0.5 for k, v in params.items()}
    body = encode_snapshot(3, weights, state)
    decoded = decode_snapshot(body, spec).optimizer
    assert decoded is not None and decoded.exp_avg == {} == decoded.exp_avg_sq
    assert decoded.momentum is not None
    assert all(torch.equal(decoded.momentum[k], state.momentum[k]) for k in params)
    adam = initial_optimizer_state(params)
    with_adam = OptimizerState(3, adam.exp_avg, adam.exp_avg_sq, state.momentum)
    assert len(body) < 0.6 * len(encode_snapshot(3, weights, with_adam))
    half_adam = OptimizerState(3, adam.exp_avg, {}, state.momentum)
    with pytest.raises(CodecError, match="exp_avg_sq"):
        decode_snapshot(encode_snapshot(3, weights, half_adam), spec)


def _rewrite(body: bytes, change) -> bytes:
    """Decode a valid body, let ``change`` edit its tensors and metadata, encode again."""
    tensors = dict(st_load(body))
    (length,) = struct.unpack("<Q", body[:8])
    metadata = json.loads(body[8 : 8 + length])["__metadata__"]
    change(tensors, metadata)
    return st_save(tensors, metadata)


def _first(tensors) -> str:
    return sorted(k for k in tensors if k.startswith("tensor."))[0]


MALFORMED = {
    "missing key": lambda t, m: t.pop(_first(t)),
    "extra key": lambda t, m: t.__setitem__("tensor.generator.sneaky", torch.zeros(1)),
    "wrong shape": lambda t, m: t.__setitem__(_first(t), torch.zeros(3, 3)),
    "wrong dtype": lambda t, m: t.__setitem__(_first(t), t[_first(t)].double()),
    "integer dtype": lambda t, m: t.__setitem__(_first(t), t[_first(t)].to(torch.int32)),
    "NaN": lambda t, m: t[_first(t)].view(-1).__setitem__(0, float("nan")),
    "Inf": lambda t, m: t[_first(t)].view(-1).__setitem__(5, float("inf")),
    "unknown kind": lambda t, m: m.__setitem__("kind", "pickle"),
    "zero samples": lambda t, m: m.__setitem__("num_samples", "0"),
    "NaN loss": lambda t, m: m.__setitem__("g_loss", "nan"),
    "accuracy above one": lambda t, m: m.__setitem__("d_real_accuracy", "1.5"),
    "missing format": lambda t, m: m.pop("format"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_results_are_refused(case: str, result, layout) -> None:
    body = _rewrite(encode_result(result), MALFORMED[case])
    with pytest.raises(CodecError):
        decode_result(body, layout)


def test_the_error_names_the_offending_tensor(result, layout) -> None:
    name = "generator.main.3.weight"

    def poison(tensors, _metadata) -> None:
        tensors["tensor." + name].view(-1)[0] = float("nan")

    with pytest.raises(CodecError, match=name.replace(".", r"\.")):
        decode_result(_rewrite(encode_result(result), poison), layout)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00" * 7,
        b"hello world, not safetensors",
        struct.pack("<Q", 10**12) + b"{}",
        struct.pack("<Q", 4) + b"[1,]",
        b"\x80\x04\x95pickle-looking bytes",
    ],
)
def test_bodies_that_are_not_safetensors_are_refused(body: bytes, layout) -> None:
    with pytest.raises(CodecError, match="not a"):
        decode_result(body, layout)


def test_too_large_bodies_are_refused_before_parsing(layout, spec) -> None:
    with pytest.raises(CodecError, match="bytes"):
        decode_result(b"\x00" * (max_result_bytes(spec) + 1), layout)


def test_a_result_of_another_phase_or_kind_is_refused(result, spec) -> None:
    d_phase = Synchronous(0, 64, 100).layout(2, spec)
    with pytest.raises(CodecError, match="bytes"):  # G's gradients are larger than D's
        decode_result(encode_result(result), d_phase)
    result.tensors = {k: torch.zeros(s) for k, s in d_phase.tensors.items()}
    result.buffers = {k: torch.zeros(s) for k, s in d_phase.buffers.items()}
    with pytest.raises(CodecError, match="kind 'd_phase', got 'g_phase'"):
        decode_result(encode_result(result), d_phase)
    result.kind = "d_phase"
    assert decode_result(encode_result(result), d_phase).kind == "d_phase"


def test_a_result_for_another_model_size_is_refused(result, spec, layout) -> None:
    narrow = StateSpec.from_config(ModelConfig(generator_features=8, discriminator_features=8))
    narrow_layout = Synchronous(0, 64, 100).layout(3, narrow)
    with pytest.raises(CodecError, match="bytes"):
        decode_result(encode_result(result), narrow_layout)
    result.tensors = {k: torch.zeros(s) for k, s in narrow_layout.tensors.items()}
    result.buffers = {k: torch.zeros(s) for k, s in narrow_layout.buffers.items()}
    with pytest.raises(CodecError, match="shape"):
        decode_result(encode_result(result), layout)
