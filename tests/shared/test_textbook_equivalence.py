"""gan-train-local takes pytorch/examples' dcgan steps, at the class model's real size.

The reference below is the textbook loop written out on its own (torch.optim.Adam,
nn.BCELoss, D on real then on detached fakes, step, then G against the updated D),
fed the same images and latent vectors. Only the inputs come from the product: W_0,
the epoch's image order and the per-image noise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shared.builtin_faces import BuiltinFaces
from shared.epoch_order import epoch_order
from shared.image_sources import BUILTIN_SHARD_SIZE
from shared.local_training import LocalRun, load_checkpoint, train
from shared.models import ModelConfig, build_models, model_state
from shared.unit_result import image_noise

BATCH, ITERATIONS, SEED = 16, 3, 5


def textbook_dcgan(config: ModelConfig, source, order: list[int]) -> dict[str, torch.Tensor]:
    """pytorch/examples/dcgan/main.py's training loop, batch after batch of ``order``."""
    net_g, net_d = build_models(config, seed=SEED)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for i in range(ITERATIONS):
        indices = order[i * BATCH : (i + 1) * BATCH]
        real = source.load(indices).float() / 127.5 - 1.0
        noise = image_noise(SEED, i, indices, config.latent_dim)
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        net_d.zero_grad()
        output = net_d(real)
        criterion(output, torch.full((len(indices),), 1.0)).backward()
        fake = net_g(noise)
        output = net_d(fake.detach())
        criterion(output, torch.full((len(indices),), 0.0)).backward()
        opt_d.step()
        # (2) Update G: maximize log(D(G(z)))
        net_g.zero_grad()
        output = net_d(fake)
        criterion(output, torch.full((len(indices),), 1.0)).backward()
        opt_g.step()
    return model_state(net_g, net_d)


def test_gan_train_local_equals_the_textbook_loop(tmp_path: Path) -> None:
    run = LocalRun(builtin_size=200, batch_size=BATCH, seed=SEED)
    source = BuiltinFaces(size=200, seed=SEED)
    train(
        run, source=source, total_images=ITERATIONS * BATCH, device=torch.device("cpu"),
        output=tmp_path, sample_every=100, checkpoint_every=100,
    )  # fmt: skip
    _, progress, ours, _ = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert progress.iteration == ITERATIONS
    order = epoch_order(SEED, 0, len(source), BUILTIN_SHARD_SIZE)
    reference = textbook_dcgan(run.model, source, order)
    assert ours.keys() == reference.keys()
    for name, expected in reference.items():
        assert torch.equal(ours[name], expected), (
            name, float((ours[name] - expected).abs().max())
        )  # fmt: skip
