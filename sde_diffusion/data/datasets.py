"""Data sets held in memory, batched by indices drawn from the generator passed in (no DataLoader, no download), so
the trainer's generator state is the stream's position. Batches are float32 on the CPU, in model space.

Every set has `shape`, `oracle` (the exact density of a Gaussian-mixture set), `scaler` (images: integer levels ↔
[−1, 1]), `num_classes` (None if unlabelled), `batch(n, generator)` and `reference(n, generator)` (held-out data);
labelled sets also `batch_with_labels` and `reference_with_labels`: the same x and its (n,) long labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..core.analytic import GaussianMixture, eight_gaussians, mixture
from ..core.checks import ArgumentError, check_number


@dataclass(frozen=True)
class Scaler:
    """The affine map between raw integer levels {0, …, levels − 1} and model space [−1, 1].

    x_model = x_raw · 2/(levels − 1) − 1, so per dimension dx_model/dx_raw = 2/(levels − 1) = `slope` and a
    density changes as log p_raw(x) = log p_model(to_model(x)) + D·log(slope) (for bits/dim).
    """

    levels: int

    def __post_init__(self):
        if self.levels < 2:
            raise ArgumentError("levels", self.levels, ">= 2")

    @property
    def slope(self) -> float:
        return 2.0 / (self.levels - 1)

    def to_model(self, x: Tensor) -> Tensor:
        """Raw levels -> [−1, 1]."""
        return x * self.slope - 1.0

    def to_raw(self, x: Tensor) -> Tensor:
        """[−1, 1] -> raw levels, as floats (not rounded)."""
        return (x + 1.0) / self.slope


class MixtureSet:
    """Draws from a GaussianMixture: `oracle` is the mixture, so its exact score and metrics apply. The label of a
    point is the component it was drawn from (`oracle.given_class(y)` is then the exact p(x | y))."""

    scaler = None

    def __init__(self, oracle: GaussianMixture):
        self.oracle = oracle
        self.shape = (oracle.dim,)
        self.num_classes = len(oracle.weights)

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        """n i.i.d. draws, float32."""
        return self.batch_with_labels(n, generator)[0]

    def batch_with_labels(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n i.i.d. draws, float32, and their components, long."""
        x, y = self.oracle.sample_with_labels(n, generator)
        return x.float(), y

    def reference(self, n: int, generator: torch.Generator) -> Tensor:
        """An independent draw of n points for evaluation."""
        return self.batch(n, generator)

    def reference_with_labels(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """An independent draw of n points and their components for evaluation."""
        return self.batch_with_labels(n, generator)


class EightGaussians(MixtureSet):
    """Eight Gaussians of std 0.15 on a circle of radius 4: the oracle's `eight_gaussians()`."""

    def __init__(self, radius: float = 4.0, std: float = 0.15):
        super().__init__(eight_gaussians(radius, std))


class MixtureData(MixtureSet):
    """The oracle's seeded random anisotropic mixture `mixture(dim, k, seed)`."""

    def __init__(self, dim: int = 16, k: int = 10, seed: int = 0):
        super().__init__(mixture(dim, k, seed))


class _Toy2D:
    """A 2-D toy set after FFJORD's recipes (Grathwohl et al. 2019), in roughly [−4, 4]²; reference = batch."""

    shape = (2,)
    oracle = None
    scaler = None
    num_classes = None

    def reference(self, n: int, generator: torch.Generator) -> Tensor:
        """An independent draw of n points for evaluation."""
        return self.batch(n, generator)


class Checkerboard(_Toy2D):
    """Uniform on the black squares of a 4×4 checkerboard covering [−4, 4]² (FFJORD)."""

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        x1 = torch.rand(n, generator=generator) * 4 - 2
        x2 = torch.rand(n, generator=generator) - 2 * torch.randint(2, (n,), generator=generator)
        x2 = x2 + torch.floor(x1) % 2
        return 2 * torch.stack([x1, x2], 1)


class SwissRoll(_Toy2D):
    """sklearn's swiss roll, (t cos t, t sin t) + noise with t ~ U(1.5π, 4.5π), divided by 5 (FFJORD)."""

    def __init__(self, noise: float = 1.0):
        check_number("noise", noise, ge=0)
        self.noise = noise

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
        x = torch.stack([t * t.cos(), t * t.sin()], 1) + self.noise * torch.randn(n, 2, generator=generator)
        return x / 5


class Moons(_Toy2D):
    """sklearn's two interleaved half circles plus noise, scaled by 2 and centred (FFJORD)."""

    def __init__(self, noise: float = 0.1):
        check_number("noise", noise, ge=0)
        self.noise = noise

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        theta = math.pi * torch.rand(n, generator=generator)
        inner = torch.randint(2, (n,), generator=generator).float()
        x = (1 - 2 * inner) * theta.cos() + inner
        y = (1 - 2 * inner) * theta.sin() + 0.5 * inner
        xy = torch.stack([x, y], 1) + self.noise * torch.randn(n, 2, generator=generator)
        return 2 * xy + torch.tensor([-1.0, -0.2])


class _FiniteSet:
    """A finite array split once into a training part and a held-out part; batches draw i.i.d. indices.

    With `labels` (N class indices in [0, C)) the set is labelled with C = max label + 1 classes.
    """

    oracle = None

    def __init__(
        self,
        data: Tensor,
        holdout: int,
        split_seed: int,
        scaler: Scaler | None,
        labels: Tensor | None = None,
        dequantise: bool = False,
    ):
        n = data.shape[0]
        if dequantise and scaler is None:
            raise ValueError("dequantise=true needs integer data (levels); this data set is already continuous")
        if not 0 <= holdout < n:
            raise ArgumentError("holdout", holdout, f"in [0, {n - 1}] for {n} examples")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
        self._train = data[perm[holdout:]]
        self._held_out = data[perm[:holdout]] if holdout else self._train
        self._train_labels = self._held_out_labels = None
        self.num_classes = None
        if labels is not None:
            self._train_labels = labels[perm[holdout:]]
            self._held_out_labels = labels[perm[:holdout]] if holdout else self._train_labels
            self.num_classes = int(labels.max()) + 1
        self.scaler, self.dequantise = scaler, bool(dequantise)
        self.shape = tuple(data.shape[1:])

    def _draw(
        self, pool: Tensor, labels: Tensor | None, n: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor | None]:
        i = torch.randint(pool.shape[0], (n,), generator=generator)
        x = pool[i].float()
        return self.scaler.to_model(x) if self.scaler is not None else x, labels[i] if labels is not None else None

    def _labelled(self, drawn: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor]:
        if drawn[1] is None:
            raise ValueError(
                f"{type(self).__name__} has no labels (num_classes is None); draw with batch()/reference()"
            )
        return drawn

    def _train_draw(self, labels: Tensor | None, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Training examples; with `dequantise`, level k becomes k + u − ½, u ~ U[0, 1) per dimension (Theis et al.
        2016; Song et al. 2021b train so): the density that the uniformly dequantised bits/dim score."""
        x, y = self._draw(self._train, labels, n, generator)
        if self.dequantise:
            x = x + self.scaler.slope * (torch.rand(x.shape, generator=generator) - 0.5)
        return x, y

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        """n examples drawn with replacement from the training split, in model space (dequantised if asked)."""
        return self._train_draw(None, n, generator)[0]

    def batch_with_labels(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """`batch` and the examples' labels."""
        return self._labelled(self._train_draw(self._train_labels, n, generator))

    def reference(self, n: int, generator: torch.Generator) -> Tensor:
        """n examples drawn with replacement from the held-out split (the training split if holdout = 0)."""
        return self._draw(self._held_out, None, n, generator)[0]

    def reference_with_labels(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """`reference` and the examples' labels."""
        return self._labelled(self._draw(self._held_out, self._held_out_labels, n, generator))

    def labelled_examples(self, held_out: bool = False) -> tuple[Tensor, Tensor]:
        """Every example of the training (or held-out) split once, in model space, with its label."""
        x, y = (self._held_out, self._held_out_labels) if held_out else (self._train, self._train_labels)
        return self._labelled((self.scaler.to_model(x.float()) if self.scaler is not None else x.float(), y))


class Digits(_FiniteSet):
    """sklearn's digits (ships with scikit-learn): 1 797 8×8 images, 17 levels 0..16, shape (1, 8, 8), labelled
    with their digit (10 classes).

    A fixed seeded permutation holds out `holdout` images (default 297, leaving 1 500 for training) for
    `reference`. Pixels map to [−1, 1] with Scaler(levels=17); `dequantise` spreads training pixels uniformly over
    their level's bin (held-out ones stay on the levels).
    """

    def __init__(self, holdout: int = 297, split_seed: int = 0, dequantise: bool = False):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.uint8).unsqueeze(1)
        labels = torch.as_tensor(digits.target, dtype=torch.long)
        super().__init__(images, holdout, split_seed, Scaler(17), labels, dequantise)


class TensorFile(_FiniteSet):
    """A user's array of N examples from a `.npy` or `.pt` file: (N, D) vectors or (N, C, H, W) images.

    uint8 data is read as 256 levels; pass `levels` for other integer data; float data is used as it is
    (already in model space). `holdout` is the held-out fraction used by `reference`. `labels` is an optional
    second file of the same kinds holding N integer class indices >= 0, one per example (a separate file rather
    than an .npz key, so both formats and the one safe reader serve it). `.pt` files are read with
    torch.load(weights_only=True), `.npy` with allow_pickle=False: loading runs no code.
    """

    def __init__(
        self,
        path: str,
        levels: int | None = None,
        holdout: float = 0.1,
        split_seed: int = 0,
        labels: str | None = None,
        dequantise: bool = False,
    ):
        data = _load_array(Path(path))
        if data.dtype == torch.uint8 and levels is None:
            levels = 256
        if not data.is_floating_point() and levels is None:
            raise ValueError(f"data file {path}: integer dtype {data.dtype} needs `levels` (e.g. 256 for 8-bit)")
        y = _load_labels(Path(labels), data.shape[0]) if labels is not None else None
        n_held = _held_out_count(holdout, data.shape[0], f"data file {path}")
        super().__init__(data, n_held, split_seed, Scaler(levels) if levels is not None else None, y, dequantise)


def _held_out_count(holdout: float, n: int, what: str) -> int:
    """The number of examples a held-out fraction `holdout` of n sets aside: at least 1 when holdout > 0."""
    if not 0 <= holdout < 1:
        raise ArgumentError("holdout", holdout, "a fraction in [0, 1)")
    n_held = round(holdout * n)
    if holdout > 0 and not 1 <= n_held < n:
        raise ValueError(f"{what}: {n} examples are too few for holdout={holdout}")
    return n_held


def _read_tensor(path: Path, what: str) -> Tensor:
    """One array from a .npy (allow_pickle=False) or .pt (weights_only) file; problems are ValueErrors naming it."""
    if not path.is_file():
        raise ValueError(f"{what} {path}: not found")
    if path.suffix not in (".npy", ".pt"):
        raise ValueError(f"{what} {path}: unknown extension {path.suffix!r}; allowed: .npy, .pt")
    try:
        if path.suffix == ".npy":
            data = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{what} {path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    if not isinstance(data, Tensor):
        raise ValueError(f"{what} {path}: holds a {type(data).__name__}, expected one array")
    return data


def _load_labels(path: Path, n: int) -> Tensor:
    """Read and validate N integer class indices >= 0 (long); every problem is a ValueError naming the file."""
    y = _read_tensor(path, "labels file")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels file {path}: dtype {y.dtype}; allowed: integer class indices")
    if y.shape != (n,):
        raise ValueError(f"labels file {path}: shape {tuple(y.shape)}, expected ({n},), one label per example")
    if bool((y < 0).any()):
        raise ValueError(f"labels file {path}: label {int(y.min())} < 0; allowed: class indices 0, 1, …")
    return y.long()


def _load_array(path: Path) -> Tensor:
    """Read and validate (N, D) or (N, C, H, W) data; every problem is a ValueError naming the file."""
    data = _read_tensor(path, "data file")
    if data.ndim not in (2, 4):
        raise ValueError(
            f"data file {path}: shape {tuple(data.shape)} has rank {data.ndim}; allowed: (N, D) or (N, C, H, W)"
        )
    if data.numel() == 0:
        raise ValueError(f"data file {path}: empty array of shape {tuple(data.shape)}")
    if data.is_floating_point() and not bool(torch.isfinite(data).all()):
        raise ValueError(f"data file {path}: contains NaN or Inf")
    return data


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageFolder(_FiniteSet):
    """A folder of PNG/JPEG images read with Pillow, flat or one subfolder per class: (N, C, H, W) levels.

    `channels` 1 reads grayscale (Pillow's "L", ITU-R 601-2 luma), 3 reads RGB (alpha dropped). `size` crops each
    image to its central square and resizes it to size×size with Pillow's BILINEAR filter: antialiased when it
    shrinks and, unlike LANCZOS, free of overshoot (no ringing clipped at 0 or 255). Without `size` all images
    must share one shape. `levels` < 256 quantises each 8-bit value v to ⌊v·levels/256⌋ (Glow's n_bits reduction
    when levels = 2^n_bits); bits/dim are then at that depth. In a folder of class subfolders, `classes` are
    their sorted names and `labels` the class index of each of `images` (sorted by path); a flat folder has
    neither. Files and folders named ".*" are skipped. `holdout` is the held-out fraction used by `reference`.
    """

    def __init__(
        self,
        path: str,
        channels: int = 3,
        size: int | None = None,
        levels: int = 256,
        holdout: float = 0.1,
        split_seed: int = 0,
    ):
        if channels not in (1, 3):
            raise ArgumentError("channels", channels, "1 (grayscale) or 3 (RGB)")
        if size is not None and not (isinstance(size, int) and size >= 1):
            raise ArgumentError("size", size, "a positive integer or None (keep the images' shape)")
        if not (isinstance(levels, int) and 2 <= levels <= 256):
            raise ArgumentError("levels", levels, "an integer in [2, 256] (8-bit images)")
        files, labels, self.classes = _image_files(Path(path))
        images = _read_images(files, "L" if channels == 1 else "RGB", size)
        if levels < 256:
            images = (images.int() * levels // 256).to(torch.uint8)
        self.images = images
        self.labels = torch.tensor(labels) if labels is not None else None
        n_held = _held_out_count(holdout, len(files), f"image folder {path}")
        super().__init__(images, n_held, split_seed, Scaler(levels), self.labels)


def _is_image(path: Path, root: Path) -> bool:
    """A .png/.jpg/.jpeg file with no hidden ("."-prefixed) part in its path below `root`."""
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return path.suffix.lower() in IMAGE_SUFFIXES and not hidden and path.is_file()


def _image_files(root: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None]:
    """The image files under `root` (sorted), and with class subfolders their labels and the class names."""
    if not root.is_dir():
        raise ValueError(f"image folder {root}: not found or not a folder")
    flat = sorted(p for p in root.iterdir() if _is_image(p, root))
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    allowed = ", ".join(IMAGE_SUFFIXES)
    if not subfolders:
        if not flat:
            raise ValueError(f"image folder {root}: no image files ({allowed})")
        return flat, None, None
    if flat:
        raise ValueError(
            f"image folder {root}: holds both image files ({flat[0].name}, …) and subfolders "
            f"({subfolders[0].name}, …); put every image in a class subfolder, or use a flat folder"
        )
    files, labels = [], []
    for label, folder in enumerate(subfolders):
        found = sorted(p for p in folder.rglob("*") if _is_image(p, root))
        if not found:
            raise ValueError(f"image folder {root}: class subfolder {folder.name!r} has no image files ({allowed})")
        files += found
        labels += [label] * len(found)
    return files, labels, tuple(p.name for p in subfolders)


def _read_images(files: list[Path], mode: str, size: int | None) -> Tensor:
    """Decode every file to `mode` ("L" or "RGB"), center-cropped and resized to size×size if given: uint8 NCHW."""
    from PIL import Image

    arrays = []
    for path in files:
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                if size is not None:
                    side = min(im.size)
                    left, top = (im.width - side) // 2, (im.height - side) // 2
                    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(im))
        except Exception as e:
            raise ValueError(f"image file {path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0]})") from e
        if arrays[-1].shape != arrays[0].shape:
            (h, w), (h0, w0) = arrays[-1].shape[:2], arrays[0].shape[:2]
            raise ValueError(
                f"image file {path}: {w}×{h} pixels, but {files[0].name} has {w0}×{h0}; "
                "set `size` to crop and resize every image to one square"
            )
    x = torch.from_numpy(np.stack(arrays))
    return x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2).contiguous()
