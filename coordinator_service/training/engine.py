"""The torch side of the coordinator: initial state, one aggregation step, sample grids.

Pure compute over bytes in and bytes out, no database and no event loop: the
aggregator runs these in a thread (``asyncio.to_thread``) and writes what they return.
The arithmetic is exactly ``shared.aggregation``'s, which is why one worker with one
unit per step reproduces a local training step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from torch import Tensor

from shared.aggregation import (
    AdamConfig,
    OuterConfig,
    aggregate,
    apply_deltas,
    apply_gradients,
    initial_optimizer_state,
)
from shared.codec import (
    OptimizerState,
    decode_result,
    decode_snapshot,
    encode_snapshot,
    max_result_bytes,
)
from shared.local_steps import local_steps_samples
from shared.models import ModelConfig, StateSpec, build_models, load_model_state, model_state
from shared.protocol import RunConfig
from shared.samples import fixed_noise, sample_grid_png
from shared.training_step import LOCAL_STEPS, UnitMetrics, UnitResult

SAMPLE_GRID_SIZE = 64  # 8 x 8 images


def model_config(config: RunConfig) -> ModelConfig:
    """The network sizes a run trains."""
    return ModelConfig(
        latent_dim=config.latent_dim,
        generator_features=config.generator_features,
        discriminator_features=config.discriminator_features,
    )


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
    checkpoint: bytes


def encode_state(iteration: int, weights: dict[str, Tensor], opt: OptimizerState) -> EncodedState:
    """The two blobs of a run_states row: served weights and the full checkpoint."""
    served = encode_snapshot(iteration, weights)
    return EncodedState(served, etag_of(served), encode_snapshot(iteration, weights, opt))


def initial_state(config: RunConfig) -> tuple[TrainingState, EncodedState]:
    """W_0 from the run seed (DCGAN init); zero Adam moments for a gradients run."""
    generator, discriminator = build_models(model_config(config), seed=config.seed)
    weights = model_state(generator, discriminator)
    params = {k: weights[k] for k in state_spec(model_config(config)).parameters}
    opt = initial_optimizer_state(params, adam=config.result_kind != LOCAL_STEPS)
    return TrainingState(0, 0, weights, opt), encode_state(0, weights, opt)


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
    sample_png: bytes | None


def decode_results(bodies: list[bytes], config: RunConfig) -> list[UnitResult]:
    """Decode accepted result bodies (validated once already, at upload)."""
    spec = state_spec(model_config(config))
    return [decode_result(b, spec, expected_kind=config.result_kind) for b in bodies]


def outer_config(config: RunConfig) -> OuterConfig:
    """The outer optimizer of a local-steps run (its config holds the filled defaults)."""
    defaults = OuterConfig()
    return OuterConfig(
        lr=config.outer_lr if config.outer_lr is not None else defaults.lr,
        momentum=config.outer_momentum if config.outer_momentum is not None else defaults.momentum,
        nesterov=config.outer_nesterov if config.outer_nesterov is not None else defaults.nesterov,
    )


def count_problem(result: UnitResult, config: RunConfig, unit_images: int) -> str | None:
    """Why ``num_samples`` does not fit the unit (None if it does).

    A gradients result covers the unit's images exactly. A local-steps result trained on
    H micro-batches of the worker's own size, cycling over the unit: its count follows
    from the H of the run and the batch size it states, and must match.
    """
    if config.result_kind != LOCAL_STEPS:
        if result.num_samples == unit_images:
            return None
        return f"{result.num_samples} images; the unit has {unit_images}"
    try:
        inner_steps = int(result.extra.get("inner_steps", ""))
        batch_size = int(result.extra.get("batch_size", ""))
    except ValueError:
        return "no valid inner_steps and batch_size in its metadata"
    if inner_steps != config.inner_steps:
        return f"{inner_steps} inner steps; this run asks for {config.inner_steps}"
    if batch_size < 1:
        return f"batch size {batch_size}"
    expected = local_steps_samples(unit_images, batch_size, inner_steps)
    if result.num_samples != expected:
        return (
            f"{result.num_samples} images; {inner_steps} steps of {batch_size} over "
            f"{unit_images} images make {expected}"
        )
    return None


def step(
    state: TrainingState, results: list[UnitResult], config: RunConfig, *, with_sample: bool
) -> StepProduct:
    """W_t+1 from W_t and the accepted results, in the order given (unit order)."""
    combined = aggregate(results)
    if config.result_kind == LOCAL_STEPS:
        weights, opt = apply_deltas(state.weights, combined, state.optimizer, outer_config(config))
    else:
        adam = AdamConfig(lr=config.lr, beta1=config.beta1, beta2=config.beta2)
        weights, opt = apply_gradients(state.weights, combined, state.optimizer, adam)
    new_state = TrainingState(state.run_id, state.iteration + 1, weights, opt)
    png = sample_grid(weights, config) if with_sample else None
    return StepProduct(
        new_state,
        encode_state(new_state.iteration, weights, opt),
        combined.metrics,
        combined.num_samples,
        png,
    )


def sample_grid(weights: dict[str, Tensor], config: RunConfig) -> bytes:
    """A PNG of G(z) for the run's fixed noise (the same z every iteration), G in eval mode."""
    generator, discriminator = build_models(model_config(config))
    load_model_state(generator, discriminator, weights)
    noise = fixed_noise(config.seed, SAMPLE_GRID_SIZE, config.latent_dim)
    return sample_grid_png(generator, noise)
