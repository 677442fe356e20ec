"""The built-in face dataset: deterministic, varied, and the common image-source interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.builtin_faces import BuiltinFaces, render_face


@pytest.fixture(scope="module")
def faces_200() -> np.ndarray:
    """The first 200 faces of seed 0 as float32 (N, 64, 64, 3)."""
    return np.stack([render_face(i) for i in range(200)]).astype(np.float32)


def test_render_face_shape_and_dtype() -> None:
    image = render_face(0)
    assert image.shape == (64, 64, 3)
    assert image.dtype == np.uint8


def test_render_face_is_deterministic() -> None:
    for index in (0, 1, 17, 19_999):
        assert np.array_equal(render_face(index, seed=3), render_face(index, seed=3))


def test_render_face_ignores_global_rng() -> None:
    np.random.seed(1)
    first = render_face(5)
    np.random.seed(2)
    np.random.random(100)
    assert np.array_equal(first, render_face(5))


def test_different_indices_differ() -> None:
    images = [render_face(i) for i in range(20)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j]), (i, j)


def test_different_seeds_differ() -> None:
    for index in range(10):
        a = render_face(index, seed=0).astype(np.float32)
        b = render_face(index, seed=1).astype(np.float32)
        assert np.abs(a - b).mean() > 5.0


def test_mean_colours_spread(faces_200: np.ndarray) -> None:
    means = faces_200.mean(axis=(1, 2))  # (N, 3) mean colour per image
    assert (means.std(axis=0) > 15.0).all()
    assert (means.max(axis=0) - means.min(axis=0) > 80.0).all()


def test_no_near_duplicates(faces_200: np.ndarray) -> None:
    flat = faces_200.reshape(len(faces_200), -1)
    closest = np.inf
    for i in range(len(flat) - 1):
        closest = min(closest, float(np.abs(flat[i + 1 :] - flat[i]).mean(axis=1).min()))
    assert closest > 5.0  # mean absolute difference per pixel channel, out of 255


def test_images_have_structure(faces_200: np.ndarray) -> None:
    assert (faces_200.std(axis=(1, 2, 3)) > 8.0).all()


def test_dataset_len_and_name() -> None:
    faces = BuiltinFaces()
    assert len(faces) == 20_000
    assert faces.name == "builtin-faces-20000-seed0"
    small = BuiltinFaces(size=100, seed=7)
    assert len(small) == 100
    assert small.name == "builtin-faces-100-seed7"


def test_dataset_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        BuiltinFaces(size=0)
    with pytest.raises(ValueError):
        BuiltinFaces(seed=-1)


def test_load_shape_dtype_and_layout() -> None:
    batch = BuiltinFaces(size=50, seed=2).load([3, 4])
    assert batch.shape == (2, 3, 64, 64)
    assert batch.dtype == torch.uint8
    assert batch.is_contiguous()
    assert np.array_equal(batch[0].permute(1, 2, 0).numpy(), render_face(3, seed=2))


def test_load_empty() -> None:
    assert BuiltinFaces(size=10).load([]).shape == (0, 3, 64, 64)


def test_load_preserves_order() -> None:
    faces = BuiltinFaces(size=100)
    forward = faces.load([5, 9, 42])
    backward = faces.load([42, 9, 5])
    assert torch.equal(forward, backward.flip(0))
    repeated = faces.load([7, 7])
    assert torch.equal(repeated[0], repeated[1])


def test_load_is_deterministic_across_objects() -> None:
    indices = [0, 11, 99]
    assert torch.equal(BuiltinFaces(seed=4).load(indices), BuiltinFaces(seed=4).load(indices))
    assert not torch.equal(BuiltinFaces(seed=4).load(indices), BuiltinFaces(seed=5).load(indices))


def test_load_accepts_numpy_ints_and_ranges() -> None:
    faces = BuiltinFaces(size=100)
    expected = faces.load([1, 2])
    assert torch.equal(faces.load(list(np.array([1, 2]))), expected)
    assert torch.equal(faces.load([np.int64(1), np.int64(2)]), expected)
    assert torch.equal(faces.load(range(1, 3)), expected)


@pytest.mark.parametrize("bad", [-1, 100, 10_000])
def test_load_out_of_range_raises(bad: int) -> None:
    with pytest.raises(IndexError):
        BuiltinFaces(size=100).load([0, bad])


def test_load_rejects_non_integer_index() -> None:
    with pytest.raises(TypeError):
        BuiltinFaces(size=100).load([1.5])  # type: ignore[list-item]
