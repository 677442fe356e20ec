"""Database rows to protocol models: what a worker is told about a run and a lease."""

from __future__ import annotations

from coordinator_service.db.models import LeasedUnit, Run
from shared.protocol import API_PREFIX, DatasetInfo, ModelSpecInfo, RunInfo, WorkUnit


def dataset_info(run: Run) -> DatasetInfo:
    """The built-in faces (named as shared.builtin_faces does) or an imported dataset."""
    dataset = run.config.dataset
    if dataset.kind == "sharded":
        return DatasetInfo(
            dataset_id=dataset.dataset_id,
            kind="sharded",
            num_images=dataset.size,
            shard_size=dataset.shard_size,
        )
    return DatasetInfo(
        dataset_id=f"builtin-faces-{dataset.size}-seed{dataset.builtin_seed}",
        kind="builtin",
        num_images=dataset.size,
        builtin_seed=dataset.builtin_seed,
        shard_size=dataset.shard_size,
    )


def run_info(run: Run) -> RunInfo:
    config = run.config
    return RunInfo(
        run_id=run.run_id,
        seed=config.seed,
        model=ModelSpecInfo(
            latent_dim=config.latent_dim,
            generator_features=config.generator_features,
            discriminator_features=config.discriminator_features,
        ),
        dataset=dataset_info(run),
        result_kind=config.result_kind,
        batch_size=config.batch_size,
        result_dtype=config.result_dtype,
        local_steps=config.local_steps_info(),
        max_staleness=config.max_staleness if config.result_kind == "async_local_steps" else None,
    )


def weights_url(run_id: int, iteration: int) -> str:
    return f"{API_PREFIX}/weights/{iteration}?run_id={run_id}"


def work_unit(run: Run, unit: LeasedUnit) -> WorkUnit:
    return WorkUnit(
        unit_id=unit.unit_id,
        lease_id=str(unit.lease_id),
        iteration=unit.iteration,
        epoch=unit.epoch,
        image_indices=unit.image_indices,
        lease_deadline=unit.deadline,
        lease_seconds_left=unit.seconds_left,
        weights_url=weights_url(run.run_id, unit.iteration),
        is_backup=unit.is_backup,
        run=run_info(run),
    )
