"""How fast is one textbook iteration here, and how big are the files on the wire?

    python bench/step_throughput.py [--threads N] [--repeats 5] [--images 128]

Prints, for micro-batches of 32 and 64 at the real model size (64 feature maps), the
median images/s of

* the synchronous phases a worker computes (``shared.strategies.Synchronous``: the D
  phase, then the G phase, which runs G forward again because D has stepped between);
* pytorch/examples' dcgan step in one process (D real, D fake detached, Adam on D, G
  against the new D reusing the same fakes, Adam on G), written out here;

and their ratio, measured in one run; then the sizes of a weights snapshot, of the part
a synchronous phase downloads, and of each phase's result in each wire dtype.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from shared.aggregation import initial_optimizer_state
from shared.builtin_faces import BuiltinFaces
from shared.codec import encode_result, encode_snapshot, select_snapshot
from shared.models import ModelConfig, StateSpec, build_models, model_state
from shared.strategies import Synchronous
from shared.unit_result import image_noise


def textbook_step(config: ModelConfig, batch: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One pytorch/examples iteration, as a closure over its networks and optimizers."""
    net_g, net_d = build_models(config, seed=0)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ones, zeros = torch.ones(batch), torch.zeros(batch)

    def step(real: torch.Tensor, noise: torch.Tensor) -> None:
        net_d.zero_grad()
        criterion(net_d(real), ones).backward()
        fake = net_g(noise)
        criterion(net_d(fake.detach()), zeros).backward()
        opt_d.step()
        net_g.zero_grad()
        criterion(net_d(fake), ones).backward()
        opt_g.step()

    return step


def median_rate(images: int, repeats: int, run: Callable[[int], None]) -> float:
    """Median images/s over ``repeats`` timed calls of ``run(repeat)``, after a warm-up."""
    run(-1)
    rates = []
    for repeat in range(repeats):
        start = time.perf_counter()
        run(repeat)
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (default: all)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (5)")
    parser.add_argument("--images", type=int, default=128, help="images per timed run (128)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = ModelConfig()
    indices = list(range(args.images))
    images = BuiltinFaces(size=args.images).load(indices)
    real = images.float() / 127.5 - 1.0
    noise = image_noise(0, 0, indices, config.latent_dim)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.images} images per run, "
          f"median of {args.repeats} runs")  # fmt: skip
    results = {}
    for batch in (32, 64):
        strategy = Synchronous(0, batch, config.latent_dim)
        nets = build_models(config, seed=0)

        def phases(repeat: int, strategy: Synchronous = strategy, nets: tuple = nets) -> None:
            for version in (0, 1):
                results[version] = strategy.compute(*nets, images, indices, version=version)

        step = textbook_step(config, batch)

        def textbook(repeat: int, step: Callable = step, batch: int = batch) -> None:
            for start in range(0, args.images, batch):
                step(real[start : start + batch], noise[start : start + batch])

        ours = median_rate(args.images, args.repeats, phases)
        reference = median_rate(args.images, args.repeats, textbook)
        print(f"batch {batch:>3}: synchronous phases {ours:6.1f} images/s, textbook step "
              f"{reference:6.1f} images/s: ratio {ours / reference:.2f}")  # fmt: skip
    weights = model_state(*build_models(config, seed=0))
    spec = StateSpec.from_config(config)
    optimizer = initial_optimizer_state({k: weights[k] for k in spec.parameters})
    mb = 1e6
    snapshot = encode_snapshot(0, weights)
    print(f"weights snapshot (a new worker's download):  {len(snapshot) / mb:.1f} MB")
    for network in ("discriminator", "generator"):
        part = select_snapshot(snapshot, [network])
        print(f"  {network} part (the next phase's download): {len(part) / mb:.1f} MB")
    print(f"checkpoint with Adam state:                  "
          f"{len(encode_snapshot(0, weights, optimizer)) / mb:.1f} MB")  # fmt: skip
    for _, result in sorted(results.items()):
        for dtype in (torch.float32, torch.bfloat16):
            body = encode_result(result, dtype)
            print(f"{result.kind} result, {str(dtype).removeprefix('torch.'):>8}:   "
                  f"{len(body) / mb:.1f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
