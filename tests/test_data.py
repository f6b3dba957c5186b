"""Data sets against their definitions: the oracle's moments, the support of each toy set, the digits split,
determinism in the passed generator only, the validation of user files, and image folders read pixel-exactly.
Labels: a mixture's label is the component drawn (class proportions = weights, per-class means = μ_k), digits'
labels are sklearn's targets, a tensor file's labels stay with their examples through the split."""

import math
import pickle

import numpy as np
import pytest
import torch

from sde_diffusion import eight_gaussians, mixture
from sde_diffusion.data import (
    Checkerboard,
    Digits,
    EightGaussians,
    ImageFolder,
    MixtureData,
    Moons,
    Scaler,
    SwissRoll,
    TensorFile,
)

SETS = [EightGaussians, Checkerboard, SwissRoll, Moons, MixtureData, Digits]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("cls", SETS)
def test_batches_come_from_the_passed_generator_only(cls):
    d = cls()
    torch.manual_seed(1)
    a = d.batch(64, _gen(3))
    torch.manual_seed(2)  # the global RNG must not matter
    b = d.batch(64, _gen(3))
    g = _gen(3)
    c1, c2 = d.batch(64, g), d.batch(64, g)
    assert a.dtype == torch.float32 and a.shape == (64, *d.shape)
    assert torch.equal(a, b) and torch.equal(a, c1) and not torch.equal(c1, c2)
    assert d.reference(8, _gen(0)).shape == (8, *d.shape)


@pytest.mark.parametrize("d, oracle", [(EightGaussians(), eight_gaussians()), (MixtureData(3, 4, 1), mixture(3, 4, 1))])
def test_mixture_sets_match_their_oracle_moments(d, oracle):
    assert torch.equal(d.oracle.means, oracle.means)
    w, mu = oracle.weights, oracle.means
    mean = w @ mu
    cov = torch.einsum("k,kij->ij", w, oracle.covs + mu[:, :, None] * mu[:, None, :]) - mean[:, None] * mean
    n = 100_000
    x = d.batch(n, _gen()).double()
    se = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 4 * se).all()
    assert torch.allclose(torch.cov(x.T), cov, atol=0.02 * cov.diagonal().max())


def test_checkerboard_is_uniform_on_the_black_squares():
    x = Checkerboard().batch(80_000, _gen()) / 2
    assert x.abs().max() <= 2
    cells = torch.floor(x).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()
    counts = torch.bincount((cells[:, 0] + 2) * 4 + (cells[:, 1] + 2), minlength=16).float()
    black = counts[counts > 0]
    assert len(black) == 8 and (black / 10_000 - 1).abs().max() < 0.05


def test_swiss_roll_without_noise_lies_on_the_spiral():
    x = SwissRoll(noise=0.0).batch(2000, _gen()).double() * 5
    t = x.norm(dim=1)
    assert t.min() >= 1.5 * math.pi - 1e-4 and t.max() <= 4.5 * math.pi + 1e-4
    assert torch.allclose(x, torch.stack([t * t.cos(), t * t.sin()], 1), atol=1e-3)


def test_moons_without_noise_lie_on_two_half_circles():
    p = (Moons(noise=0.0).batch(4000, _gen()) - torch.tensor([-1.0, -0.2])) / 2
    outer = (p.norm(dim=1) - 1).abs() < 1e-5
    inner = ((p - torch.tensor([1.0, 0.5])).norm(dim=1) - 1).abs() < 1e-5
    assert (outer | inner).all()
    assert (p[outer, 1] >= -1e-6).all() and (p[inner, 1] <= 0.5 + 1e-6).all()
    assert abs(outer.float().mean() - 0.5) < 0.05


def test_scaler_maps_levels_to_minus_one_one_and_back():
    s = Scaler(17)
    raw = torch.arange(17.0)
    assert s.to_model(raw)[0] == -1 and s.to_model(raw)[-1] == 1
    assert torch.allclose(s.to_raw(s.to_model(raw)), raw)
    assert s.slope == pytest.approx(2 / 16)
    with pytest.raises(ValueError, match="levels"):
        Scaler(1)


def test_digits_split_partitions_the_images_and_lies_on_17_levels():
    from sklearn.datasets import load_digits

    d = Digits()
    assert d.shape == (1, 8, 8) and d.scaler.levels == 17
    assert d._train.shape[0] == 1500 and d._held_out.shape[0] == 297
    key = lambda t: sorted(map(tuple, t.reshape(len(t), -1).tolist()))  # noqa: E731
    assert key(torch.cat([d._train, d._held_out])) == key(torch.as_tensor(load_digits().images))
    x = d.batch(512, _gen())
    raw = d.scaler.to_raw(x)
    assert x.min() >= -1 and x.max() <= 1 and torch.allclose(raw, raw.round(), atol=1e-5)
    ref = d.scaler.to_raw(d.reference(2000, _gen())).round().to(torch.uint8)
    held = {tuple(r) for r in d._held_out.reshape(297, -1).tolist()}
    assert all(tuple(r) in held for r in ref.reshape(2000, -1).tolist())


def test_dequantised_digits_are_uniform_within_their_level_bins_and_held_out_ones_stay_on_the_levels(tmp_path):
    """Each training pixel is k + u − ½ with u ~ U[0, 1) (KS test against the uniform), with the same images as the
    undequantised set draws from the same generator; reference draws are untouched."""
    from scipy import stats

    plain, deq = Digits(), Digits(dequantise=True)
    x, x_plain = deq.batch(256, _gen(3)), plain.batch(256, _gen(3))
    raw, k = deq.scaler.to_raw(x), plain.scaler.to_raw(x_plain).round()
    assert torch.equal(raw.sub(k).add(0.5).floor(), torch.zeros_like(raw))  # inside [k − ½, k + ½)
    assert stats.kstest(raw.sub(k).add(0.5).flatten().double().numpy(), "uniform").pvalue > 1e-3
    assert torch.equal(deq.reference(64, _gen(4)), plain.reference(64, _gen(4)))
    np.save(tmp_path / "x.npy", np.zeros((10, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="dequantise=true needs integer data"):
        TensorFile(str(tmp_path / "x.npy"), dequantise=True)


def test_tensor_file_reads_npy_and_pt(tmp_path):
    images = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8, generator=_gen())
    np.save(tmp_path / "img.npy", images.numpy())
    d = TensorFile(str(tmp_path / "img.npy"))
    assert d.shape == (1, 4, 4) and d.scaler.levels == 256
    assert d._train.shape[0] == 45 and d._held_out.shape[0] == 5
    x = d.batch(100, _gen())
    assert x.min() >= -1 and x.max() <= 1
    vec = torch.randn(20, 3, generator=_gen())
    torch.save(vec, tmp_path / "v.pt")
    d = TensorFile(str(tmp_path / "v.pt"), holdout=0.0)
    assert d.scaler is None and d.shape == (3,)
    rows = {tuple(r) for r in vec.tolist()}
    assert all(tuple(r) in rows for r in d.batch(50, _gen()).tolist())


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize(
    "name, array, problem",
    [
        ("missing.npy", None, "not found"),
        ("empty.npy", np.zeros((0, 2), np.float32), "empty"),
        ("nan.npy", np.array([[0.0, np.nan], [1.0, 2.0]], np.float32), "NaN or Inf"),
        ("inf.pt", torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), "NaN or Inf"),
        ("rank1.npy", np.zeros(5, np.float32), "rank 1"),
        ("rank3.npy", np.zeros((4, 8, 8), np.float32), "rank 3"),
        ("dict.pt", {"x": torch.zeros(3, 2)}, "holds a dict"),
        ("ints.npy", np.zeros((4, 2), np.int64), "levels"),
        ("data.csv", "1,2\n", "extension"),
        ("evil.pt", "marker", "unreadable"),
    ],
)
def test_tensor_file_rejects_bad_files_naming_the_path(tmp_path, name, array, problem):
    path = tmp_path / name
    if isinstance(array, np.ndarray):
        np.save(path, array)
        path = path.with_suffix(".npy")
    elif name.endswith(".csv"):
        path.write_text(array)
    elif array == "marker":
        with open(path, "wb") as f:
            pickle.dump(_Marker(str(tmp_path / "marker")), f, protocol=2)
    elif array is not None:
        torch.save(array, path)
    with pytest.raises(ValueError, match=problem) as e:
        TensorFile(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "marker").exists()


def _write(path, pixels):
    """Save a uint8 (H, W) or (H, W, 3) array as an image file (PNG is lossless)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _rows(images):
    return sorted(map(tuple, images.reshape(len(images), -1).tolist()))


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_round_trips_every_pixel_through_the_scaler(tmp_path, channels):
    rng = np.random.default_rng(channels)
    shape = (5, 7) if channels == 1 else (5, 7, 3)
    written = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(20)]
    for i, pixels in enumerate(written):
        _write(tmp_path / f"img{i:02d}.png", pixels)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._img00.png").write_bytes(b"macOS resource fork, not a PNG")
    d = ImageFolder(str(tmp_path), channels=channels, holdout=0.2)
    expected = torch.from_numpy(np.stack(written)).reshape(20, 5, 7, channels).permute(0, 3, 1, 2)
    assert d.shape == (channels, 5, 7) and d.scaler.levels == 256 and d.labels is None and d.classes is None
    assert torch.equal(d.images, expected)
    assert _rows(torch.cat([d._train, d._held_out])) == _rows(expected) and d._held_out.shape[0] == 4
    x = d.batch(64, _gen())
    raw = d.scaler.to_raw(x)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert (raw - raw.round()).abs().max() < 1e-3
    train = {tuple(r) for r in d._train.reshape(16, -1).tolist()}
    assert all(tuple(r) in train for r in raw.round().to(torch.uint8).reshape(64, -1).tolist())


def test_image_folder_grayscale_of_rgb_is_itu_601_luma(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    _write(tmp_path / "a.png", rgb)
    _write(tmp_path / "b.png", rgb[::-1].copy())
    d = ImageFolder(str(tmp_path), channels=1, holdout=0.0)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert d.shape == (1, 6, 6) and np.abs(d.images[0, 0].numpy() - luma).max() <= 1


def test_image_folder_labels_come_from_class_subfolders(tmp_path):
    for i in range(3):
        _write(tmp_path / "cat" / f"{i}.png", np.full((4, 4, 3), 10 + i, np.uint8))
    for i in range(2):
        _write(tmp_path / "dog" / "nested" / f"{i}.png", np.full((4, 4, 3), 200 + i, np.uint8))
    _write(tmp_path / "dog" / "x.JPG", np.full((4, 4, 3), 220, np.uint8))
    _write(tmp_path / ".thumbnails" / "t.png", np.zeros((9, 9, 3), np.uint8))
    d = ImageFolder(str(tmp_path), holdout=0.0)
    assert d.classes == ("cat", "dog") and d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    first = d.images[:, 0, 0, 0].int()
    assert first[:5].tolist() == [10, 11, 12, 200, 201] and abs(int(first[5]) - 220) <= 1  # JPEG is lossy
    assert torch.equal(d.labels, (first >= 200).long())


def test_image_folder_crops_the_centre_square_and_resizes_without_overshoot(tmp_path):
    wide = np.zeros((6, 12, 3), np.uint8)
    wide[:, 3:9], wide[:, 9:] = 100, 255  # the central 6×6 square is constant 100
    _write(tmp_path / "a" / "wide.png", wide)
    step = np.full((16, 16, 3), 50, np.uint8)
    step[:, 8:] = 200
    _write(tmp_path / "b" / "step.png", step)
    d = ImageFolder(str(tmp_path), size=5, holdout=0.0)
    assert d.shape == (3, 5, 5) and (d.images[0] == 100).all()
    edge = d.images[1].int()  # BILINEAR: weights >= 0, so values stay within [50, 200] (LANCZOS rings outside)
    assert edge.min() == 50 and edge.max() == 200 and ((edge > 50) & (edge < 200)).any()


def test_image_folder_levels_quantise_8_bit_values(tmp_path):
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    _write(tmp_path / "a.png", pixels)
    _write(tmp_path / "b.png", pixels.T.copy())
    d = ImageFolder(str(tmp_path), channels=1, levels=16, holdout=0.0)
    assert d.scaler.levels == 16 and torch.equal(d.images[0, 0], torch.from_numpy(pixels // 16))


@pytest.mark.parametrize(
    "layout, kwargs, problem",
    [
        ("missing", {}, "not found or not a folder"),
        ("empty", {}, r"no image files \(.png, .jpg, .jpeg\)"),
        ("text_only", {}, "no image files"),
        ("corrupt", {}, r"bad.png: unreadable \(UnidentifiedImageError"),
        ("two_shapes", {}, r"b.png: 5×4 pixels, but a.png has 4×4; set `size`"),
        ("mixed", {}, "both image files"),
        ("empty_class", {}, "class subfolder 'dog' has no image files"),
        ("ok", {"channels": 4}, "channels must be 1"),
        ("ok", {"size": 0}, "size must be a positive integer"),
        ("ok", {"levels": 257}, r"levels must be an integer in \[2, 256\]"),
        ("ok", {"holdout": 0.9}, "too few for holdout=0.9"),
    ],
)
def test_image_folder_rejects_bad_folders_naming_the_problem(tmp_path, layout, kwargs, problem):
    root = tmp_path / "imgs"
    square = np.zeros((4, 4, 3), np.uint8)
    if layout != "missing":
        root.mkdir()
    if layout in ("ok", "corrupt", "two_shapes", "mixed"):
        _write(root / "a.png", square)
    if layout == "text_only":
        (root / "readme.txt").write_text("hi")
    if layout == "corrupt":
        (root / "bad.png").write_bytes(b"not a png at all")
    if layout == "two_shapes":
        _write(root / "b.png", np.zeros((4, 5, 3), np.uint8))
    if layout in ("mixed", "empty_class"):
        _write(root / "cat" / "c.png", square)
    if layout == "empty_class":
        (root / "dog").mkdir()
    with pytest.raises(ValueError, match=problem) as e:
        ImageFolder(str(root), **kwargs)
    assert "\n" not in str(e.value)
    if "must be" not in problem:
        assert str(root) in str(e.value)


@pytest.mark.parametrize("d", [EightGaussians(), MixtureData(3, 4, 1)], ids=["eight_gaussians", "mixture"])
def test_mixture_labels_are_the_components_drawn(d):
    n, gm = 100_000, d.oracle
    x, y = d.batch_with_labels(n, _gen(5))
    assert d.num_classes == len(gm.weights) and y.dtype == torch.long and torch.equal(x, d.batch(n, _gen(5)))
    share = torch.bincount(y, minlength=d.num_classes).double() / n
    assert ((share - gm.weights).abs() < 4 * (gm.weights * (1 - gm.weights) / n).sqrt()).all()
    for k in range(d.num_classes):
        xk = x[y == k].double()
        se = (gm.covs[k].diagonal() / len(xk)).sqrt()
        assert ((xk.mean(0) - gm.means[k]).abs() < 4 * se).all()
    if isinstance(d, EightGaussians):  # std 0.15 at distance 3.06 apart: the most responsible component, always
        assert torch.equal(gm.responsibilities(x[:10_000]).argmax(1), y[:10_000])


def test_digits_labels_are_sklearns_targets_in_both_splits():
    from sklearn.datasets import load_digits

    digits, d = load_digits(), Digits()
    pairs = {(tuple(im.astype(int).ravel()), int(t)) for im, t in zip(digits.images, digits.target, strict=True)}
    assert d.num_classes == 10
    for draw in (d.batch_with_labels, d.reference_with_labels):
        x, y = draw(300, _gen(2))
        raw = d.scaler.to_raw(x).round().int().reshape(300, -1)
        assert all((tuple(r), int(t)) in pairs for r, t in zip(raw.tolist(), y, strict=True))
    assert torch.equal(d.batch_with_labels(64, _gen(4))[0], d.batch(64, _gen(4)))
    assert torch.equal(d.reference_with_labels(64, _gen(4))[0], d.reference(64, _gen(4)))


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_tensor_file_labels_stay_with_their_examples(tmp_path, suffix):
    y_all = torch.arange(40) % 7
    x_all = y_all[:, None].float() + torch.rand(40, 3, generator=_gen())  # floor(x) is the label
    np.save(tmp_path / "x.npy", x_all.numpy())
    path = tmp_path / f"y{suffix}"
    if suffix == ".npy":
        np.save(path, y_all.int().numpy())
    else:
        torch.save(y_all, path)
    d = TensorFile(str(tmp_path / "x.npy"), holdout=0.25, labels=str(path))
    assert d.num_classes == 7 and TensorFile(str(tmp_path / "x.npy")).num_classes is None
    for draw in (d.batch_with_labels, d.reference_with_labels):
        x, y = draw(200, _gen(1))
        assert y.dtype == torch.long and torch.equal(x[:, 0].floor().long(), y)


@pytest.mark.parametrize(
    "labels, problem",
    [
        (None, "not found"),
        (np.zeros(20, np.float32), "dtype"),
        (np.zeros(19, np.int64), r"expected \(20,\)"),
        (np.zeros((20, 1), np.int64), r"expected \(20,\)"),
        (np.full(20, -1, np.int64), "< 0"),
    ],
)
def test_tensor_file_rejects_bad_labels_naming_the_file(tmp_path, labels, problem):
    np.save(tmp_path / "x.npy", np.zeros((20, 2), np.float32))
    if labels is not None:
        np.save(tmp_path / "y.npy", labels)
    with pytest.raises(ValueError, match=problem) as e:
        TensorFile(str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy"))
    assert "labels file" in str(e.value) and str(tmp_path / "y.npy") in str(e.value)


def test_unlabelled_sets_have_no_classes(tmp_path):
    for cls in (Checkerboard, SwissRoll, Moons):
        assert cls().num_classes is None
    np.save(tmp_path / "x.npy", np.zeros((20, 2), np.float32))
    with pytest.raises(ValueError, match="no labels"):
        TensorFile(str(tmp_path / "x.npy")).batch_with_labels(4, _gen())


def test_image_folder_labels_follow_their_images_into_batches(tmp_path):
    for label, name in enumerate(["a", "b", "c"]):
        for i in range(4):
            _write(tmp_path / name / f"{i}.png", np.full((4, 4), 60 * label + i, np.uint8))
    d = ImageFolder(str(tmp_path), channels=1, holdout=0.25)
    assert d.num_classes == 3
    for draw in (d.batch_with_labels, d.reference_with_labels):
        x, y = draw(100, _gen(3))
        assert torch.equal(d.scaler.to_raw(x[:, 0, 0, 0]).round().long() // 60, y)
