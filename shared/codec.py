"""The only way tensors cross the wire or rest in the database: safetensors, validated.

Why never pickle: a result body comes from a student's laptop; unpickling it would run
whatever code it carries on the instructor's machine. safetensors is a JSON header plus
raw bytes, so the header can be checked against the model's spec (names, shapes,
dtypes, size) before a single tensor is allocated, and decoding runs no code at all.

Every problem raises :class:`CodecError`, whose message names the offending tensor.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from shared.models import StateSpec
from shared.unit_result import UnitMetrics, UnitResult

FORMAT_RESULT = "ganns-result/1"
FORMAT_SNAPSHOT = "ganns-snapshot/1"

WIRE_DTYPES: dict[str, torch.dtype] = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_BYTES_PER_DTYPE = {"F32": 4, "F16": 2, "BF16": 2}
_HEADER_SLACK = 1 << 20  # JSON header and metadata: generous, still a hard bound

# Tensor name prefixes inside a file.
_TENSOR = "tensor."
_BUFFER = "buffer."
_WEIGHT = "weight."
_EXP_AVG = "adam.exp_avg."
_EXP_AVG_SQ = "adam.exp_avg_sq."
_MOMENTUM = "outer.momentum."
_PENDING = "outer.pending."


class CodecError(ValueError):
    """A safetensors body that does not match what the model and protocol expect."""


@dataclass(frozen=True)
class ResultLayout:
    """What a valid result of one kind holds: names and shapes, from the run's strategy."""

    kind: str
    tensors: Mapping[str, tuple[int, ...]]
    buffers: Mapping[str, tuple[int, ...]]


@dataclass
class OptimizerState:
    """Adam moments per parameter (``step`` counts updates) plus, for local-steps runs,
    the outer optimizer's momentum buffers and, with Delayed Nesterov, the sum of the
    changes its momentum has yet to take in."""

    step: int
    exp_avg: dict[str, Tensor]
    exp_avg_sq: dict[str, Tensor]
    momentum: dict[str, Tensor] | None = None
    pending: dict[str, Tensor] | None = None


@dataclass
class Snapshot:
    """W_t with, for the coordinator's own checkpoints, the optimizer state."""

    iteration: int
    weights: dict[str, Tensor]
    optimizer: OptimizerState | None
    metadata: dict[str, str]


def max_result_bytes(spec: StateSpec) -> int:
    """The largest valid result body for a model: every tensor in float32 plus the header."""
    return spec.numel() * 4 + _HEADER_SLACK


def max_snapshot_bytes(spec: StateSpec) -> int:
    """The largest valid snapshot, float32: weights plus Adam moments plus the outer
    momentum and its pending changes."""
    return (spec.numel() + 4 * sum(math.prod(s) for s in spec.parameters.values())) * 4 + (
        _HEADER_SLACK
    )


# --- results ------------------------------------------------------------------------------


def encode_result(result: UnitResult, dtype: torch.dtype = torch.float32) -> bytes:
    """A unit result as safetensors bytes; ``dtype`` (fp32, fp16, bf16) sets the wire size."""
    if dtype not in DTYPE_NAMES.values():
        raise CodecError(f"unsupported wire dtype {dtype}")
    tensors = {
        _TENSOR + k: v.detach().to("cpu", dtype).contiguous() for k, v in result.tensors.items()
    }
    tensors.update(
        {_BUFFER + k: v.detach().to("cpu", dtype).contiguous() for k, v in result.buffers.items()}
    )
    metadata = {
        "format": FORMAT_RESULT,
        "kind": result.kind,
        "iteration": str(result.iteration),
        "num_samples": str(result.num_samples),
        **{name: repr(value) for name, value in vars(result.metrics).items() if value is not None},
        **{f"extra.{k}": v for k, v in result.extra.items()},
    }
    return _save(tensors, metadata)


def decode_result(
    data: bytes,
    layout: ResultLayout,
    *,
    allowed_dtypes: tuple[str, ...] = ("F32", "F16", "BF16"),
) -> UnitResult:
    """Validate and decode a result body into float32 tensors; raise CodecError on any flaw.

    The header is checked against ``layout`` (kind, every name and shape) before any
    tensor is read, so a wrong or hostile body costs no allocation.
    """
    limit = sum(math.prod(s) for s in (*layout.tensors.values(), *layout.buffers.values()))
    limit = limit * 4 + _HEADER_SLACK
    if len(data) > limit:
        raise CodecError(f"result is {len(data)} bytes, more than {limit} allowed")
    header, metadata = _read_header(data)
    if metadata.get("format") != FORMAT_RESULT:
        raise CodecError(f"metadata 'format' must be {FORMAT_RESULT!r}")
    kind = metadata.get("kind", "")
    if kind != layout.kind:
        raise CodecError(f"this unit expects a result of kind {layout.kind!r}, got {kind!r}")
    expected = {_TENSOR + k: s for k, s in layout.tensors.items()}
    expected.update({_BUFFER + k: s for k, s in layout.buffers.items()})
    _check_header(header, expected, allowed_dtypes)
    tensors = _load_finite(data)
    iteration = _int_field(metadata, "iteration", minimum=0)
    num_samples = _int_field(metadata, "num_samples", minimum=1)
    bounds = {"d_real_accuracy": (0.0, 1.0), "d_fake_accuracy": (0.0, 1.0)}
    metrics = UnitMetrics(
        **{
            name: _float_field(metadata, name, *bounds.get(name, (-math.inf, math.inf)))
            for name in ("g_loss", "d_loss", "d_real_accuracy", "d_fake_accuracy")
            if name in metadata
        }
    )
    return UnitResult(
        kind=kind,
        iteration=iteration,
        num_samples=num_samples,
        tensors=_strip(tensors, _TENSOR),
        buffers=_strip(tensors, _BUFFER),
        metrics=metrics,
        extra={k[6:]: v for k, v in metadata.items() if k.startswith("extra.")},
    )


# --- snapshots -----------------------------------------------------------------------------


def encode_snapshot(
    iteration: int,
    weights: Mapping[str, Tensor],
    optimizer: OptimizerState | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """W_t (and optionally the optimizer state) as float32 safetensors bytes."""
    tensors = {_WEIGHT + k: _f32(v) for k, v in weights.items()}
    meta = {"format": FORMAT_SNAPSHOT, "iteration": str(iteration), **(metadata or {})}
    if optimizer is not None:
        meta["optimizer_step"] = str(optimizer.step)
        tensors.update({_EXP_AVG + k: _f32(v) for k, v in optimizer.exp_avg.items()})
        tensors.update({_EXP_AVG_SQ + k: _f32(v) for k, v in optimizer.exp_avg_sq.items()})
        if optimizer.momentum is not None:
            tensors.update({_MOMENTUM + k: _f32(v) for k, v in optimizer.momentum.items()})
        if optimizer.pending is not None:
            tensors.update({_PENDING + k: _f32(v) for k, v in optimizer.pending.items()})
    return _save(tensors, meta)


def decode_snapshot(data: bytes, spec: StateSpec) -> Snapshot:
    """Validate and decode a snapshot. The optimizer part is optional; within it the Adam
    moments (both or neither), the outer momentum and its pending changes each cover
    every parameter or none."""
    if len(data) > max_snapshot_bytes(spec):
        raise CodecError(f"snapshot is {len(data)} bytes, more than {max_snapshot_bytes(spec)}")
    header, metadata = _read_header(data)
    if metadata.get("format") != FORMAT_SNAPSHOT:
        raise CodecError(f"metadata 'format' must be {FORMAT_SNAPSHOT!r}")
    expected = {_WEIGHT + k: s for k, s in spec.weights.items()}
    has_optimizer = "optimizer_step" in metadata
    has_adam = any(k.startswith((_EXP_AVG, _EXP_AVG_SQ)) for k in header)
    has_momentum = any(k.startswith(_MOMENTUM) for k in header)
    has_pending = any(k.startswith(_PENDING) for k in header)
    if has_optimizer:
        groups = ((_EXP_AVG, _EXP_AVG_SQ) if has_adam else ()) + (
            (_MOMENTUM,) if has_momentum else ()
        ) + ((_PENDING,) if has_pending else ())
        for prefix in groups:
            expected.update({prefix + k: s for k, s in spec.parameters.items()})
    _check_header(header, expected, ("F32",))
    tensors = _load_finite(data)
    optimizer = None
    if has_optimizer:
        optimizer = OptimizerState(
            step=_int_field(metadata, "optimizer_step", minimum=0),
            exp_avg=_strip(tensors, _EXP_AVG),
            exp_avg_sq=_strip(tensors, _EXP_AVG_SQ),
            momentum=_strip(tensors, _MOMENTUM) if has_momentum else None,
            pending=_strip(tensors, _PENDING) if has_pending else None,
        )
    return Snapshot(
        iteration=_int_field(metadata, "iteration", minimum=0),
        weights=_strip(tensors, _WEIGHT),
        optimizer=optimizer,
        metadata=metadata,
    )


def select_snapshot(data: bytes, networks: Sequence[str]) -> bytes:
    """The part of a served snapshot a worker lacks after one fold: the parameters of
    ``networks`` and every BatchNorm buffer. Cut from the bytes (no tensor decoded), so
    the part holds exactly the values of the whole."""
    header, metadata = _read_header(data)
    (length,) = struct.unpack("<Q", data[:8])
    body = memoryview(data)[8 + length :]
    wanted = tuple(f"{_WEIGHT}{n}." for n in networks)
    keep = sorted(
        (name for name in header if name.startswith(wanted) or _is_buffer_weight(name)),
        key=lambda name: header[name]["data_offsets"][0],
    )
    new_header: dict[str, object] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in keep:
        start, stop = header[name]["data_offsets"]
        chunks.append(bytes(body[start:stop]))
        new_header[name] = {**header[name], "data_offsets": [offset, offset + stop - start]}
        offset += stop - start
    new_header["__metadata__"] = {**metadata, "networks": ",".join(networks)}
    return _frame(new_header, b"".join(chunks))


def decode_partial_snapshot(data: bytes, spec: StateSpec, networks: Sequence[str]) -> Snapshot:
    """Validate and decode what :func:`select_snapshot` cut: those networks' parameters
    and every buffer, nothing else."""
    if len(data) > max_snapshot_bytes(spec):
        raise CodecError(f"snapshot is {len(data)} bytes, more than {max_snapshot_bytes(spec)}")
    header, metadata = _read_header(data)
    if metadata.get("format") != FORMAT_SNAPSHOT:
        raise CodecError(f"metadata 'format' must be {FORMAT_SNAPSHOT!r}")
    wanted = tuple(f"{n}." for n in networks)
    expected = {_WEIGHT + k: v for k, v in spec.parameters.items() if k.startswith(wanted)}
    expected.update({_WEIGHT + k: v for k, v in spec.buffers.items()})
    _check_header(header, expected, ("F32",))
    return Snapshot(
        iteration=_int_field(metadata, "iteration", minimum=0),
        weights=_strip(_load_finite(data), _WEIGHT),
        optimizer=None,
        metadata=metadata,
    )


def _is_buffer_weight(name: str) -> bool:
    return name.endswith((".running_mean", ".running_var"))


def read_metadata(data: bytes) -> dict[str, str]:
    """The metadata of a safetensors body, read without touching its tensors."""
    return _read_header(data)[1]


# --- helpers -------------------------------------------------------------------------------


def _save(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> bytes:
    """safetensors bytes that depend on the values alone: the same state gives the same
    bytes, so its ETag (a hash of them) names it, and a replay can prove it reached it.

    The library writes its metadata from a Rust HashMap, whose order changes from one
    call to the next; the header is written again here with its keys sorted.
    """
    data = st_save(dict(tensors), dict(metadata))
    (length,) = struct.unpack("<Q", data[:8])
    return _frame(json.loads(data[8 : 8 + length]), data[8 + length :])


def _frame(header: Mapping[str, object], body: bytes) -> bytes:
    """A header (sorted keys) and the tensor bytes it describes, as one safetensors body."""
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + body


def _f32(t: Tensor) -> Tensor:
    return t.detach().to("cpu", torch.float32).contiguous()


def _strip(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _read_header(data: bytes) -> tuple[dict[str, dict], dict[str, str]]:
    """Parse the safetensors JSON header without touching the tensor bytes."""
    if len(data) < 8:
        raise CodecError("not a safetensors body: shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(len(data) - 8, _HEADER_SLACK):
        raise CodecError("not a safetensors body: header length out of range")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"not a safetensors body: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CodecError("not a safetensors body: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CodecError("safetensors metadata must map strings to strings")
    return header, metadata


def _check_header(
    header: dict[str, dict], expected: dict[str, tuple[int, ...]], allowed: tuple[str, ...]
) -> None:
    missing = sorted(expected.keys() - header.keys())
    if missing:
        raise CodecError(f"missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    extra = sorted(header.keys() - expected.keys())
    if extra:
        raise CodecError(f"unexpected tensor {extra[0]!r} ({len(extra)} unexpected in all)")
    for name, shape in expected.items():
        info = header[name]
        if not isinstance(info, dict):
            raise CodecError(f"tensor {name!r}: malformed header entry")
        if info.get("dtype") not in allowed:
            raise CodecError(f"tensor {name!r}: dtype {info.get('dtype')} not in {allowed}")
        if tuple(info.get("shape", ())) != shape:
            raise CodecError(
                f"tensor {name!r}: shape {info.get('shape')} != expected {list(shape)}"
            )


def _load_finite(data: bytes) -> dict[str, Tensor]:
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError and others
        raise CodecError(f"not a valid safetensors body: {exc}") from None
    out: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        tensor = tensor.float()
        if not bool(torch.isfinite(tensor).all()):
            raise CodecError(f"tensor {name!r} holds NaN or Inf values")
        out[name] = tensor
    return out


def _int_field(metadata: Mapping[str, str], key: str, *, minimum: int) -> int:
    try:
        value = int(metadata[key])
    except (KeyError, ValueError):
        raise CodecError(f"metadata {key!r} must be an integer") from None
    if value < minimum:
        raise CodecError(f"metadata {key!r} must be >= {minimum}, got {value}")
    return value


def _float_field(
    metadata: Mapping[str, str], key: str, low: float = -math.inf, high: float = math.inf
) -> float:
    try:
        value = float(metadata[key])
    except (KeyError, ValueError):
        raise CodecError(f"metadata {key!r} must be a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise CodecError(f"metadata {key!r} must be finite and within [{low}, {high}]")
    return value
