"""The torch side of the coordinator: initial state, one aggregation step, sample grids.

Pure compute over bytes in and bytes out, no database and no event loop: the
aggregator runs these in a thread (``asyncio.to_thread``) and writes what they return.
The arithmetic is the run's strategy's (``shared.strategies``): the engine never asks
which mode a run trains in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from torch import Tensor

from coordinator_service.training.result_bounds import state_problem
from shared.codec import (
    DTYPE_NAMES,
    WIRE_DTYPES,
    OptimizerState,
    ResultLayout,
    decode_result,
    decode_snapshot,
    encode_snapshot,
    max_result_bytes,
)
from shared.models import ModelConfig, StateSpec, build_models, load_model_state, model_state
from shared.protocol import RunConfig
from shared.samples import fixed_noise, sample_grid_png
from shared.strategies import Strategy, strategy_for
from shared.unit_result import UnitMetrics, UnitResult

SAMPLE_GRID_SIZE = 64  # 8 x 8 images


def model_config(config: RunConfig) -> ModelConfig:
    """The network sizes a run trains."""
    return ModelConfig(
        latent_dim=config.latent_dim,
        generator_features=config.generator_features,
        discriminator_features=config.discriminator_features,
    )


def strategy(config: RunConfig) -> Strategy:
    """The run's way to train."""
    return strategy_for(config)


@lru_cache(maxsize=16)
def state_spec(model: ModelConfig) -> StateSpec:
    """Names and shapes of W_t (cached: every upload is validated against it)."""
    return StateSpec.from_config(model)


def result_limit(config: RunConfig) -> int:
    """The largest result body this run accepts."""
    return max_result_bytes(state_spec(model_config(config)))


def etag_of(data: bytes) -> str:
    """A strong ETag for immutable weights bytes."""
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


@dataclass
class TrainingState:
    """W_t and the optimizer state (Adam's, or the outer momentum) kept between steps."""

    run_id: int
    iteration: int
    weights: dict[str, Tensor]
    optimizer: OptimizerState


@dataclass
class EncodedState:
    weights: bytes
    weights_etag: str
    checkpoint: bytes | None  # None: a version that the results log can replay


def encode_state(state: TrainingState, *, with_checkpoint: bool = False) -> EncodedState:
    """The blobs of a run_states row: served weights and, when asked, the full checkpoint
    (a fold's is stored later, on its own: ``encode_checkpoint``)."""
    served = encode_snapshot(state.iteration, state.weights)
    checkpoint = encode_checkpoint(state) if with_checkpoint else None
    return EncodedState(served, etag_of(served), checkpoint)


def encode_checkpoint(state: TrainingState) -> bytes:
    """A version's full checkpoint: its weights and optimizer state."""
    return encode_snapshot(state.iteration, state.weights, state.optimizer)


def initial_state(config: RunConfig) -> tuple[TrainingState, EncodedState]:
    """W_0 from the run seed (DCGAN init) and the strategy's empty optimizer state."""
    generator, discriminator = build_models(model_config(config), seed=config.seed)
    weights = model_state(generator, discriminator)
    params = {k: weights[k] for k in state_spec(model_config(config)).parameters}
    opt = strategy(config).initial_optimizer(params)
    state = TrainingState(0, 0, weights, opt)
    return state, encode_state(state, with_checkpoint=True)


def load_checkpoint(run_id: int, config: RunConfig, checkpoint: bytes) -> TrainingState:
    """Decode a stored checkpoint back into tensors."""
    snapshot = decode_snapshot(checkpoint, state_spec(model_config(config)))
    if snapshot.optimizer is None:
        raise ValueError("checkpoint without optimizer state")
    return TrainingState(run_id, snapshot.iteration, snapshot.weights, snapshot.optimizer)


@dataclass
class StepProduct:
    state: TrainingState
    encoded: EncodedState
    metrics: UnitMetrics
    num_samples: int


class UnsafeState(ValueError):
    """A fold that would publish a non-finite value or an invalid BatchNorm statistic."""


def decode(body: bytes, config: RunConfig, version: int) -> UnitResult:
    """A result body for a unit of ``version``, in the run's wire dtype and nothing else
    (a float16 body on a float32 run is refused: CodecError)."""
    dtype = DTYPE_NAMES[config.result_dtype]
    wire = next(code for code, wire_dtype in WIRE_DTYPES.items() if wire_dtype == dtype)
    return decode_result(body, result_layout(config, version), allowed_dtypes=(wire,))


def decode_results(bodies: list[bytes], config: RunConfig, version: int) -> list[UnitResult]:
    """Decode accepted result bodies of one version (validated once already, at upload)."""
    return [decode(b, config, version) for b in bodies]


def result_layout(config: RunConfig, version: int) -> ResultLayout:
    """What a valid result for a unit of ``version`` holds."""
    return strategy(config).layout(version, state_spec(model_config(config)))


def count_problem(result: UnitResult, config: RunConfig, unit_images: int) -> str | None:
    """Why a result's declared counts do not fit its unit and run (None if they do).

    The fold weighs a result by ``num_samples``, which must be exactly what the run's
    strategy says a unit of this many images gives: what a worker declares never
    changes its weight, it can only get the result refused.
    """
    expected = strategy(config).expected_samples(unit_images)
    if result.num_samples != expected:
        return f"{result.num_samples} images; a unit of {unit_images} images gives {expected}"
    batch = result.extra.get("batch_size")
    if batch != str(config.batch_size):
        return f"micro-batch {batch}; this run fixes it at {config.batch_size}"
    steps = result.extra.get("inner_steps")
    if steps is not None and steps != str(-(-unit_images // config.batch_size)):
        return f"{steps} inner steps for {unit_images} images at micro-batch {config.batch_size}"
    return None


def step(
    state: TrainingState,
    results: list[UnitResult],
    config: RunConfig,
) -> StepProduct:
    """The next version from this one and its accepted results, in the order given: its
    served weights are encoded, its checkpoint and grid only when asked
    (``encode_checkpoint``, ``sample_grid``)."""
    fold = strategy(config).fold(
        state.weights, state.optimizer, results, version=state.iteration
    )
    new_state = TrainingState(state.run_id, state.iteration + 1, fold.weights, fold.optimizer)
    problem = state_problem(_all_tensors(fold.weights, fold.optimizer))
    if problem is not None:
        raise UnsafeState(f"the fold into version {new_state.iteration}: {problem}")
    return StepProduct(
        new_state,
        encode_state(new_state),
        fold.metrics,
        fold.num_samples,
    )


def _all_tensors(weights: dict[str, Tensor], optimizer: OptimizerState) -> dict[str, Tensor]:
    """Weights and optimizer state under one set of distinct names."""
    named = dict(weights)
    for part, tensors in (("exp_avg", optimizer.exp_avg), ("exp_avg_sq", optimizer.exp_avg_sq),
                          ("momentum", optimizer.momentum or {}),
                          ("pending", optimizer.pending or {})):  # fmt: skip
        named.update({f"{part}.{k}": v for k, v in tensors.items()})
    return named


def sample_grid(weights: dict[str, Tensor], config: RunConfig) -> bytes:
    """A PNG of G(z) for the run's fixed noise (the same z every iteration), drawn as the
    textbook loop draws (``shared.samples``)."""
    generator, discriminator = build_models(model_config(config))
    load_model_state(generator, discriminator, weights)
    noise = fixed_noise(config.seed, SAMPLE_GRID_SIZE, config.latent_dim)
    return sample_grid_png(generator, noise)
