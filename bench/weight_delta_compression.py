"""Would downloading weights as a compressed delta against the worker's cached iteration
save bytes? (issue 8's optional item; the answer is in docs/local-steps.md)

    python bench/weight_delta_compression.py [--steps 3] [--inner-steps 4]

Takes real outer steps of a local-steps run on the class model (64 feature maps, RGB,
built-in faces) and measures, for each new W_t+1 against the W_t a worker already has:
the fp32 snapshot; zlib of its bytes split into planes (byte 0 of every float, then
byte 1, ...: the usual trick that groups the sign/exponent bytes); and zlib of the
plane-split XOR of the two iterations' bit patterns, which is lossless (the worker
XORs it back) and is zero wherever a bit did not change. Also the bf16 size, for scale:
a lossy download the worker would start from.
"""

from __future__ import annotations

import argparse
import time
import zlib

import numpy as np
import torch

from shared.aggregation import (
    AdamConfig,
    OuterConfig,
    aggregate,
    apply_deltas,
    initial_optimizer_state,
)
from shared.builtin_faces import BuiltinFaces
from shared.models import ModelConfig, StateSpec, build_models, load_model_state, model_state
from shared.strategies import LocalSteps


def planes(words: np.ndarray) -> bytes:
    """float32 bit patterns as four byte planes (all first bytes, then all second, ...)."""
    return words.view(np.uint8).reshape(-1, 4).T.tobytes()


def unplanes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(4, -1).T.copy().view(np.uint32).ravel()


def main(argv: list[str] | None = None) -> list[float]:
    """Print the table; returns the XOR delta's saving per step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="outer steps to measure (3)")
    parser.add_argument("--inner-steps", type=int, default=4, help="H per step (4)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = ModelConfig(channels=3)
    spec = StateSpec.from_config(config)
    generator, discriminator = build_models(config, seed=0)
    weights = model_state(generator, discriminator)
    state = initial_optimizer_state({k: weights[k] for k in spec.parameters}, adam=False)
    batch = 64
    faces = BuiltinFaces(args.steps * args.inner_steps * batch, 0)
    names = sorted(weights)
    savings = []
    print("step | fp32 MB | zlib(planes) MB | zlib(planes of XOR) MB | saved | encode s")
    for step in range(args.steps):
        indices = list(
            range(step * args.inner_steps * batch, (step + 1) * args.inner_steps * batch)
        )
        load_model_state(generator, discriminator, weights)
        result = LocalSteps(0, batch, config.latent_dim, inner=AdamConfig()).compute(
            generator, discriminator, faces.load(indices), indices, version=step
        )
        before = np.concatenate([weights[k].numpy().ravel() for k in names]).view(np.uint32)
        weights, state = apply_deltas(weights, aggregate([result]), state, OuterConfig())
        after = np.concatenate([weights[k].numpy().ravel() for k in names]).view(np.uint32)
        started = time.perf_counter()
        delta = zlib.compress(planes(before ^ after), 6)
        seconds = time.perf_counter() - started
        plain = zlib.compress(planes(after), 6)
        # Lossless: what a worker holding W_t would rebuild, bit for bit.
        assert np.array_equal(unplanes(zlib.decompress(delta)) ^ before, after)
        savings.append(after.nbytes / len(delta))
        print(
            f"{step + 1:4d} | {after.nbytes / 1e6:7.1f} | {len(plain) / 1e6:15.1f} | "
            f"{len(delta) / 1e6:22.1f} | {after.nbytes / len(delta):4.2f}x | {seconds:8.2f}"
        )
    print(f"bf16 weights (lossy, for scale): {after.nbytes / 2e6:.1f} MB")
    return savings


if __name__ == "__main__":
    main()
