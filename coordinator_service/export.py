"""``gan-coordinator export`` and ``gan-coordinator sample``: the class's generator as a file.

An exported generator is one safetensors file: the generator's parameters and BatchNorm
running statistics under their ``nn.Module`` names (so ``Generator.load_state_dict``
takes them as they are), and string metadata saying what it is (``format``), where it
came from (``run_id``, ``iteration``) and how to build the network (``model``, the run's
whole ``run_config``, both JSON). No pickle: the file can be shared and opened anywhere.

``sample`` needs no database: it rebuilds the generator from such a file and draws a
grid with :mod:`shared.samples` (fixed noise from a seed: the same seed, the same faces).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from coordinator_service.training.engine import model_config, state_spec
from shared.codec import CodecError, decode_snapshot, read_metadata
from shared.models import GENERATOR, Generator, ModelConfig, batch_norms
from shared.protocol import API_PREFIX, RunConfig, RunSummary
from shared.samples import fixed_noise, sample_grid_png

FORMAT_GENERATOR = "ganns-generator/1"


class ExportError(RuntimeError):
    """Nothing to export (no run, no stored iteration) or a file that is not a generator."""


@dataclass(frozen=True)
class ExportedGenerator:
    """The bytes of an exported generator file and what they hold."""

    data: bytes
    run_id: int
    iteration: int


def generator_file(
    weights: dict[str, Tensor], *, run_id: int, iteration: int, config: RunConfig
) -> bytes:
    """The generator part of a flat W_t as safetensors bytes with its config as metadata."""
    prefix = GENERATOR + "."
    tensors = {
        k[len(prefix) :]: v.detach().to("cpu", torch.float32).contiguous()
        for k, v in weights.items()
        if k.startswith(prefix)
    }
    if not tensors:
        raise ExportError("the weights hold no generator tensors")
    model = ModelConfig(
        latent_dim=config.latent_dim,
        generator_features=config.generator_features,
        discriminator_features=config.discriminator_features,
    )
    metadata = {
        "format": FORMAT_GENERATOR,
        "run_id": str(run_id),
        "iteration": str(iteration),
        "model": json.dumps(model.to_dict(), sort_keys=True),
        "run_config": config.model_dump_json(),
    }
    return st_save(tensors, metadata)


def load_generator(data: bytes) -> tuple[Generator, dict[str, str]]:
    """A generator (eval mode, CPU) and the metadata from an exported file's bytes. Grids
    drawn from it use ``shared.samples``, which draws as the textbook loop does."""
    try:
        metadata = read_metadata(data)
    except CodecError as exc:
        raise ExportError(f"not an exported generator: {exc}") from None
    if metadata.get("format") != FORMAT_GENERATOR:
        raise ExportError(f"not an exported generator (format must be {FORMAT_GENERATOR!r})")
    try:
        model = ModelConfig(**json.loads(metadata["model"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"exported generator has unreadable model metadata: {exc}") from None
    with torch.device("meta"):  # no init draw: every tensor comes from the file
        generator = Generator(model.latent_dim, model.generator_features, model.channels)
    generator.to_empty(device="cpu")
    for norm in batch_norms(generator):  # not in the file (not part of W_t)
        assert norm.num_batches_tracked is not None
        norm.num_batches_tracked.zero_()
    missing, unexpected = generator.load_state_dict(st_load(data), strict=False)
    # num_batches_tracked is not part of W_t (see shared.models); every other key must match.
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ExportError(f"generator tensors do not match: missing={missing} extra={unexpected}")
    generator.eval()
    return generator, metadata


async def export_generator(
    database_url: str, *, run_id: int | None = None, iteration: int | None = None
) -> ExportedGenerator:
    """Read W_t of a run (default: the current or latest) at ``iteration`` (default: newest)."""
    # Imported here: `sample` and --help need no database driver.
    from coordinator_service.db.pool import connect
    from coordinator_service.db.runs import RunsRepo
    from coordinator_service.db.states import StatesRepo

    conn = await connect(database_url)
    try:
        runs = RunsRepo(conn)
        run = await (runs.get(run_id=run_id) if run_id is not None else runs.latest())
        if run is None:
            raise ExportError(f"no run {run_id}" if run_id is not None else "no run yet")
        states = StatesRepo(conn)
        stored_iterations = await states.stored_iterations(run_id=run.run_id)
        wanted = iteration if iteration is not None else max(stored_iterations, default=-1)
        stored = await states.weights(run_id=run.run_id, iteration=wanted)
        if stored is None or stored.weights is None:
            raise ExportError(
                f"run {run.run_id} has no stored weights for iteration {wanted}; stored: "
                f"{', '.join(map(str, stored_iterations)) or 'none'} (the last few iterations "
                "and every checkpoint_every-th are kept)"
            )
    finally:
        await conn.close()
    return _exported(stored.weights, run_id=run.run_id, config=run.config)


def fetch_generator(
    url: str,
    *,
    run_id: int | None = None,
    iteration: int | None = None,
    verify: str | bool = True,
    admin_token: str = "",
) -> ExportedGenerator:
    """W_t of a run from a running coordinator at ``url``, as a worker downloads it.

    The weights are served to registered workers and the instructor only, so this sends
    the admin token (``--admin-token`` / GAN_ADMIN_TOKEN): an instructor's tool should
    not need a worker identity that would show on the leaderboard. Default: the newest
    run at its newest iteration."""
    base = url.rstrip("/") + API_PREFIX
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    timeout = httpx.Timeout(120.0)
    try:
        with httpx.Client(base_url=base, verify=verify, timeout=timeout, headers=headers) as client:
            if run_id is None:
                runs = _json(client.get("/runs"), "no run yet")
                if not runs:
                    raise ExportError("no run yet")
                run_id = max(int(run["run_id"]) for run in runs)
            found = _json(client.get(f"/runs/{run_id}"), f"no run {run_id}")
            run = RunSummary.model_validate(found)
            wanted = run.iteration if iteration is None else iteration
            response = client.get(f"/weights/{wanted}", params={"run_id": run.run_id})
    except httpx.HTTPError as exc:
        raise ExportError(f"cannot reach the coordinator at {url}: {exc}") from None
    if response.status_code == 404:
        raise ExportError(
            f"run {run.run_id} has no stored weights for iteration {wanted} (the newest is "
            f"{run.iteration}; the last few iterations and every checkpoint_every-th are kept)"
        )
    if response.status_code in (401, 403):
        raise ExportError(
            f"{url} refused the admin token ({response.status_code}): the weights are for "
            "the class's workers and the instructor only; pass --admin-token TOKEN or set "
            "GAN_ADMIN_TOKEN"
        )
    _json(response, "")  # raises on any other error
    return _exported(response.content, run_id=run.run_id, config=run.config)


def _json(response: httpx.Response, not_found: str) -> Any:
    """The body of a successful response, or an ExportError that says what went wrong."""
    if response.status_code == 404 and not_found:
        raise ExportError(not_found)
    if not response.is_success:
        raise ExportError(
            f"{response.request.url} answered {response.status_code}: {response.text}"
        )
    return response.json() if "json" in response.headers.get("content-type", "") else None


def _exported(weights: bytes, *, run_id: int, config: RunConfig) -> ExportedGenerator:
    """The generator file of a stored W_t."""
    snapshot = decode_snapshot(weights, state_spec(model_config(config)))
    data = generator_file(snapshot.weights, run_id=run_id, iteration=snapshot.iteration,
                          config=config)  # fmt: skip
    return ExportedGenerator(data=data, run_id=run_id, iteration=snapshot.iteration)


def sample_png(data: bytes, *, count: int = 64, seed: int | None = None, nrow: int = 8) -> bytes:
    """A PNG grid of ``count`` images from an exported generator; seed default: the run's."""
    generator, metadata = load_generator(data)
    if seed is None:
        seed = json.loads(metadata.get("run_config", "{}")).get("seed", 0)
    noise = fixed_noise(int(seed), count, generator.latent_dim)
    return sample_grid_png(generator, noise, nrow=nrow)
