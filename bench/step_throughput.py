"""How fast is one worker's gradient step here, and how big are the files on the wire?

    python bench/step_throughput.py [--threads N] [--repeats 5] [--images 128]

Prints, for micro-batches of 32 and 64, the median images/s of
``shared.training_step.compute_gradients`` at the real model size (64 feature maps),
plus the size of a weights snapshot and of a unit result in each wire dtype.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from shared.aggregation import initial_optimizer_state
from shared.builtin_faces import BuiltinFaces
from shared.codec import encode_result, encode_snapshot
from shared.models import ModelConfig, StateSpec, build_models, model_state
from shared.training_step import compute_gradients


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=128, help="images per timed unit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = ModelConfig()
    generator, discriminator = build_models(config, seed=0)
    indices = list(range(args.images))
    images = BuiltinFaces(size=args.images).load(indices)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), unit of {args.images} images, "
        f"median of {args.repeats} runs"
    )
    result = None
    for batch_size in (32, 64):
        compute_gradients(
            generator,
            discriminator,
            images[:batch_size],
            indices[:batch_size],
            batch_size=batch_size,
            seed=0,
            iteration=0,
        )  # warm-up
        rates = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            result = compute_gradients(
                generator,
                discriminator,
                images,
                indices,
                batch_size=batch_size,
                seed=0,
                iteration=repeat,
            )
            rates.append(args.images / (time.perf_counter() - start))
        print(
            f"batch {batch_size:>3}: {statistics.median(rates):7.1f} images/s "
            f"(min {min(rates):.1f}, max {max(rates):.1f})"
        )
    assert result is not None
    weights = model_state(generator, discriminator)
    spec = StateSpec.from_config(config)
    optimizer = initial_optimizer_state({k: weights[k] for k in spec.parameters})
    mb = 1e6
    print(f"weights snapshot (worker download): {len(encode_snapshot(0, weights)) / mb:.1f} MB")
    print(
        f"checkpoint with Adam state:          "
        f"{len(encode_snapshot(0, weights, optimizer)) / mb:.1f} MB"
    )
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        start = time.perf_counter()
        body = encode_result(result, dtype)
        took = (time.perf_counter() - start) * 1000
        print(
            f"unit result, {str(dtype).removeprefix('torch.'):>8}:   {len(body) / mb:.1f} MB "
            f"(encoded in {took:.0f} ms)"
        )


if __name__ == "__main__":
    main()
