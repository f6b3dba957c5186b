"""Inpainting masks against their definitions: which coordinates each kind observes, the random mask's observed
fraction within binomial error and the same in every channel, and A = I[mask] reading exactly those coordinates."""

import pytest
import torch

from sde_diffusion.core.checks import ArgumentError
from sde_diffusion.sampling import masks


def test_half_observes_the_first_half_of_a_vector_and_the_named_half_of_an_image():
    assert masks.half((2,)).tolist() == [True, False]
    assert masks.half((5,)).tolist() == [True, True, True, False, False]
    rows, cols = torch.arange(6)[:, None].expand(6, 6), torch.arange(6).expand(6, 6)
    for side, inside in (("top", rows < 3), ("bottom", rows >= 3), ("left", cols < 3), ("right", cols >= 3)):
        mask = masks.half((3, 6, 6), side)
        assert torch.equal(mask, inside.expand(3, 6, 6)), side


def test_box_hides_a_centred_box_of_size_times_each_side():
    mask = masks.box((2, 8, 10), size=0.5)
    hidden = (~mask[0]).nonzero()
    assert torch.equal(mask[0], mask[1]) and len(hidden) == 4 * 5
    assert hidden[:, 0].unique().tolist() == [2, 3, 4, 5] and hidden[:, 1].unique().tolist() == [2, 3, 4, 5, 6]
    assert (~masks.box((16,), size=0.25)).nonzero()[:, 0].tolist() == [6, 7, 8, 9]
    assert (~masks.box((3,), size=0.01)).sum() == 1 and (~masks.box((3,), size=0.99)).sum() == 2


def test_random_observes_each_pixel_with_probability_fraction_in_every_channel():
    mask = masks.random((3, 100, 100), fraction=0.3, seed=4)
    p, n = 0.3, 100 * 100
    assert torch.equal(mask[0], mask[1]) and torch.equal(mask[0], mask[2])
    assert abs(mask[0].double().mean() - p) < 4 * (p * (1 - p) / n) ** 0.5
    assert torch.equal(mask, masks.random((3, 100, 100), fraction=0.3, seed=4))
    assert not torch.equal(mask, masks.random((3, 100, 100), fraction=0.3, seed=5))
    for seed in range(20):  # never all or nothing, even for two coordinates
        assert masks.random((2,), fraction=0.5, seed=seed).sum() == 1


def test_measurement_matrix_reads_the_observed_coordinates():
    mask = masks.random((2, 3, 4), fraction=0.5, seed=1)
    x = torch.randn(5, 2, 3, 4, dtype=torch.float64)
    A = masks.measurement_matrix(mask)
    assert A.shape == (int(mask.sum()), 24) and torch.equal(x.flatten(1) @ A.T, x.flatten(1)[:, mask.flatten()])


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: masks.half((4,), side="middle"), "side"),
        (lambda: masks.box((4,), size=1.0), "size"),
        (lambda: masks.random((4,), fraction=0.0), "fraction"),
        (lambda: masks.random((4,), seed=-1), "seed"),
        (lambda: masks.half((1,)), "shape"),
        (lambda: masks.half((4, 4)), "shape"),
        (lambda: masks.half((1, 1, 4), side="top"), "shape"),  # one row: nothing left to fill in
        (lambda: masks.random((3, 1, 1)), "shape"),
    ],
)
def test_bad_arguments_name_the_parameter(make, name):
    with pytest.raises(ArgumentError) as info:
        make()
    assert info.value.name == name
