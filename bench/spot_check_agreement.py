"""How far apart honest computations of one unit are, on this machine's devices.

    python bench/spot_check_agreement.py            # CPU threads, and every CUDA GPU here
    python bench/spot_check_agreement.py --features 16 --unit-images 64   # a quick look

A spot check compares two workers' results for the same unit (weights, images, noise
and micro-batch are fixed by the run) and calls them different past
``spot_check_tolerance`` (1e-3 by default). Honest workers still differ by
floating-point order: another CPU thread count sums in another order, and a GPU runs
other kernels (with TF32 convolutions, PyTorch's default for cuDNN, in 10-bit
mantissas). This computes one synchronous unit's D-phase and G-phase results on the
CPU with one thread (the reference), with every thread, and on each CUDA device with
TF32 off and on, and prints each one's relative distance to the reference (the spot
check's own ``result_distance``) beside what a lie scores. Run it on the machines a
class will use before turning spot checks on, and keep the tolerance well above the
largest honest distance and well below the smallest lie.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import torch

from coordinator_service.training.spot_checks import result_distance
from shared.builtin_faces import BuiltinFaces
from shared.models import ModelConfig, StateSpec, build_models, load_model_state, model_state
from shared.strategies import Synchronous
from shared.unit_result import UnitResult

TOLERANCE = 1e-3  # RunConfig.spot_check_tolerance's default


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def unit_results(
    weights: dict[str, torch.Tensor], model: ModelConfig, strategy: Synchronous,
    images: torch.Tensor, indices: list[int], device: torch.device, version: int,
) -> tuple[UnitResult, UnitResult]:  # fmt: skip
    """The D phase's result at ``weights`` (version 2t) and the G phase's (2t + 1) against
    the same D, as a worker on ``device`` computes them; both come back on the CPU."""
    generator, discriminator = build_models(model)
    load_model_state(generator, discriminator, weights)
    generator.to(device)
    discriminator.to(device)
    d_phase = strategy.compute(generator, discriminator, images, indices, version=version)
    g_phase = strategy.compute(generator, discriminator, None, indices, version=version + 1)
    return on_cpu(d_phase), on_cpu(g_phase)


def on_cpu(result: UnitResult, sign: float = 1.0) -> UnitResult:
    """The result's tensors (times ``sign``) and buffers on the CPU."""
    return UnitResult(
        result.kind, result.iteration, result.num_samples,
        {k: sign * v.cpu() for k, v in result.tensors.items()},
        {k: v.cpu() for k, v in result.buffers.items()},
        result.metrics, result.extra,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> list[tuple[str, float, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, default=64,
                        help="feature maps of G and D (default: 64, the class model)")
    parser.add_argument("--unit-images", type=int, default=256,
                        help="images in the unit (default: 256)")
    parser.add_argument("--micro-batch", type=int, default=64,
                        help="the run's micro-batch (default: 64)")
    parser.add_argument("--warm-iterations", type=int, default=3,
                        help="textbook iterations taken on the CPU before the unit, so the "
                        "gradients are not those of the initial weights (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default: 0)")
    args = parser.parse_args(argv)  # fmt: skip

    model = ModelConfig(generator_features=args.features, discriminator_features=args.features)
    strategy = Synchronous(args.seed, args.micro_batch, model.latent_dim)
    faces = BuiltinFaces(20_000, args.seed)
    generator, discriminator = build_models(model, seed=args.seed)
    weights = model_state(generator, discriminator)
    optimizer = strategy.initial_optimizer(
        {k: weights[k] for k in StateSpec.from_config(model).parameters}
    )
    position = 0
    with threads(1):
        for version in range(2 * args.warm_iterations):
            if version % 2 == 0:
                indices = list(range(position, position + args.micro_batch))
                position += args.micro_batch
            load_model_state(generator, discriminator, weights)
            needs = strategy.needs_images(version)
            result = strategy.compute(generator, discriminator,
                                      faces.load(indices) if needs else None, indices,
                                      version=version)  # fmt: skip
            fold = strategy.fold(weights, optimizer, [result], version=version)
            weights, optimizer = fold.weights, fold.optimizer
    indices = list(range(position, position + args.unit_images))
    images = faces.load(indices)
    version = 2 * args.warm_iterations
    cpu = torch.device("cpu")
    with threads(1):
        reference = unit_results(weights, model, strategy, images, indices, cpu, version)

    rows: list[tuple[str, float, float]] = []  # (computed on, D-phase and G-phase distance)

    def measure(label: str, results: tuple[UnitResult, UnitResult]) -> None:
        d, g = (result_distance(ours, ref) for ours, ref in zip(results, reference, strict=True))
        rows.append((label, d, g))

    with threads(1):
        measure("CPU, 1 thread, again", unit_results(weights, model, strategy, images, indices,
                                                     cpu, version))  # fmt: skip
    many = torch.get_num_threads()
    if many > 1:
        with threads(many):
            measure(f"CPU, {many} threads",
                    unit_results(weights, model, strategy, images, indices, cpu, version))
    for index in range(torch.cuda.device_count()):
        gpu = torch.device("cuda", index)
        name = torch.cuda.get_device_name(gpu)
        for enabled in (False, True):
            with tf32(enabled):
                measure(f"{name}, TF32 {'on' if enabled else 'off'}",
                        unit_results(weights, model, strategy, images, indices, gpu, version))
    measure("a lie: the reference sign-flipped",
            (on_cpu(reference[0], -1.0), on_cpu(reference[1], -1.0)))  # fmt: skip

    print(f"one unit of {args.unit_images} images, micro-batch {args.micro_batch}, "
          f"{args.features} feature maps, after {args.warm_iterations} iterations; "
          f"relative distance to the CPU with 1 thread (tolerance {TOLERANCE:g})")  # fmt: skip
    print(f"{'computed on':<44} {'D phase':>10} {'G phase':>10}  verdict")
    for label, d, g in rows:
        verdict = "agrees" if max(d, g) <= TOLERANCE else "DISAGREES"
        print(f"{label:<44} {d:>10.2e} {g:>10.2e}  {verdict}")
    if not torch.cuda.is_available():
        print("no CUDA device here: run this on a class's GPU machine to see its distance")
    return rows


if __name__ == "__main__":
    main()
