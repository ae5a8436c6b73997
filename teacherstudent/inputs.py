"""Input distributions (docs/science.md §3): a plain-dict registry, one small class each.

Every kind scales its inputs with ``inputs.sigma`` (per-coordinate standard deviation for
``gaussian``, ``uniform`` and ``digits``; the spread of the centres for ``clusters``; the
total energy ``E||x||^2 = sigma^2 d`` for ``manifold``) and reads a few fields of its own:

========== ================================ ==================================================
kind       own fields                       x
========== ================================ ==================================================
gaussian   -                                N(0, sigma^2 I_d)
uniform    -                                each coordinate U(-sqrt(3) sigma, sqrt(3) sigma)
clusters   n_clusters, cluster_std          centre c ~ U{1..n_clusters} (centres drawn once,
                                            N(0, sigma^2 I_d)) plus N(0, cluster_std^2 I_d)
manifold   latent_dim, noise                sigma sqrt(d / r) A z + N(0, noise^2 I_d): latent
                                            z ~ N(0, I_r), A a random orthonormal d x r
                                            embedding drawn once (r = latent_dim <= d)
digits     holdout                          scikit-learn's bundled 8x8 handwritten digits
                                            (1797 images, no download), d = 64, each pixel
                                            standardised on the training pool, times sigma
gaussian_  image_channels, image_size       N(0, sigma^2 I_d) images, d = channels x size x size
images                                      (flattened channel-major, as ``x.view(N, C, H, W)``)
========== ================================ ==================================================

Image kinds (``image_shape`` not None: ``digits`` as 1x8x8, ``gaussian_images``) can feed
convolutional teachers and students (``arch='conv'``, teacherstudent/conv.py); every kind
still hands out flat ``[N, d]`` rows, which a convolution views as ``[N, C, H, W]``.

``digits`` is a finite data set: a ``holdout`` fraction of the images (chosen once) is the
evaluation pool, the rest the training pool. A draw of ``n`` images from a pool takes
whole random passes over it (no image twice before every image once), so a set no larger
than its pool has no repeats. Its true digit labels travel with it (``Draw.label``), as
do the cluster indices of ``clusters``.

Every distribution draws from an explicit ``torch.Generator`` (CPU, float64), so the same
seed gives the same samples on every device; ``seed`` (the structure seed) fixes what a
kind draws once (centres, embedding, holdout split) from its own derived stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports this module (no import cycle at run time)
    from .config import InputsConfig

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .seeds import Stream, generator

SPLITS = ("train", "eval")


def structure_generator(seed: int, tag: int) -> torch.Generator:
    """A CPU generator for what a kind draws once, independent of every other stream of ``seed``."""
    return generator(seed, Stream.STRUCTURE, tag)


@dataclass(frozen=True)
class Draw:
    """``x``: ``[N, D]`` float64; ``label``: ``[N]`` long reference labels (cluster, true digit) or None."""

    x: torch.Tensor
    label: torch.Tensor | None = None


class InputDistribution:
    """Base class: ``draw(n, gen, split) -> Draw``; ``sample`` returns its ``x`` only.

    ``params``: the ``InputsConfig`` fields the kind reads besides ``sigma`` (setting another
    kind's field is an error); ``fixed_dim``: the input dimension where the kind fixes it.
    """

    params: ClassVar[tuple[str, ...]] = ()
    fixed_dim: ClassVar[int | None] = None

    def __init__(self, cfg: InputsConfig, d: int, seed: int):
        self.cfg = cfg
        self.d = d

    @classmethod
    def dim(cls, cfg: InputsConfig, d: int) -> int:
        return cls.fixed_dim if cls.fixed_dim is not None else d

    @classmethod
    def image_shape(cls, cfg: InputsConfig) -> tuple[int, int, int] | None:
        """``(channels, height, width)`` of an image kind (its flat rows viewed as images), else None."""
        return None

    def draw(self, n: int, gen: torch.Generator, split: str = "train") -> Draw:
        raise NotImplementedError

    def sample(self, n: int, gen: torch.Generator, split: str = "train") -> torch.Tensor:
        """``[n, d]`` float64 inputs; ``split`` matters only for finite data sets (digits)."""
        return self.draw(n, gen, split).x


class Gaussian(InputDistribution):
    """x ~ N(0, sigma^2 I_d)."""

    def draw(self, n: int, gen: torch.Generator, split: str = "train") -> Draw:
        return Draw(torch.randn(n, self.d, generator=gen, dtype=torch.float64) * self.cfg.sigma)


class Uniform(InputDistribution):
    """Each coordinate U(-a, a) with a = sqrt(3) sigma: zero mean, variance sigma^2."""

    def draw(self, n: int, gen: torch.Generator, split: str = "train") -> Draw:
        u = torch.rand(n, self.d, generator=gen, dtype=torch.float64)
        return Draw((2 * u - 1) * (math.sqrt(3.0) * self.cfg.sigma))


class Clusters(InputDistribution):
    """Equal-weight mixture of ``n_clusters`` Gaussians; ``centres``: ``[n_clusters, d]``."""

    params = ("n_clusters", "cluster_std")

    def __init__(self, cfg: InputsConfig, d: int, seed: int):
        super().__init__(cfg, d, seed)
        gen = structure_generator(seed, 1)
        self.centres = torch.randn(cfg.n_clusters, d, generator=gen, dtype=torch.float64) * cfg.sigma

    def draw(self, n: int, gen: torch.Generator, split: str = "train") -> Draw:
        comp = torch.randint(self.cfg.n_clusters, (n,), generator=gen)
        noise = torch.randn(n, self.d, generator=gen, dtype=torch.float64) * self.cfg.cluster_std
        return Draw(self.centres[comp] + noise, comp)


class Manifold(InputDistribution):
    """A linear r-dimensional manifold: ``x = scale * z @ A.T + noise``; ``A``: ``[d, r]`` orthonormal columns."""

    params = ("latent_dim", "noise")

    def __init__(self, cfg: InputsConfig, d: int, seed: int):
        super().__init__(cfg, d, seed)
        r = cfg.latent_dim
        if r > d:
            raise ValueError(f"inputs.latent_dim ({r}) must not exceed the input dimension ({d})")
        gen = structure_generator(seed, 2)
        q, _ = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=torch.float64))
        self.embedding = q  # [d, r]
        self.scale = cfg.sigma * math.sqrt(d / r)

    def draw(self, n: int, gen: torch.Generator, split: str = "train") -> Draw:
        z = torch.randn(n, self.cfg.latent_dim, generator=gen, dtype=torch.float64)
        x = self.scale * z @ self.embedding.T
        if self.cfg.noise > 0:
            x = x + self.cfg.noise * torch.randn(n, self.d, generator=gen, dtype=torch.float64)
        return Draw(x)


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images ``[1797, 64]`` (pixel values 0..16) and labels ``[1797]``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


class Digits(InputDistribution):
    """The 8x8 digits, standardised per pixel on the training pool (constant pixels stay 0), times sigma."""

    params = ("holdout",)
    fixed_dim = 64

    @classmethod
    def image_shape(cls, cfg: InputsConfig) -> tuple[int, int, int]:
        return 1, 8, 8

    def __init__(self, cfg: InputsConfig, d: int, seed: int):
        super().__init__(cfg, d, seed)
        images, labels = load_digits_arrays()
        x, y = torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())
        perm = torch.randperm(len(x), generator=structure_generator(seed, 3))
        n_eval = max(1, round(cfg.holdout * len(x)))
        self.pools = {"eval": perm[:n_eval], "train": perm[n_eval:]}
        train = x[self.pools["train"]]
        mu, sd = train.mean(0), train.std(0)
        self.x = torch.where(sd > 0, (x - mu) / sd.clamp_min(1e-12), 0.0) * cfg.sigma
        self.labels = y

    def draw(self, n: int, gen: torch.Generator, split: str = "train") -> Draw:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        pool = self.pools[split]
        passes = [torch.randperm(len(pool), generator=gen) for _ in range(-(-n // len(pool)))]
        idx = pool[torch.cat(passes)[:n]]
        return Draw(self.x[idx], self.labels[idx])


class GaussianImages(Gaussian):
    """i.i.d. N(0, sigma^2) pixels of ``image_channels`` x ``image_size`` x ``image_size`` images."""

    params = ("image_channels", "image_size")

    @classmethod
    def dim(cls, cfg: InputsConfig, d: int) -> int:
        return cfg.image_channels * cfg.image_size**2

    @classmethod
    def image_shape(cls, cfg: InputsConfig) -> tuple[int, int, int]:
        return cfg.image_channels, cfg.image_size, cfg.image_size


INPUTS: dict[str, type[InputDistribution]] = {
    "gaussian": Gaussian,
    "uniform": Uniform,
    "clusters": Clusters,
    "manifold": Manifold,
    "digits": Digits,
    "gaussian_images": GaussianImages,
}

# The InputsConfig fields that belong to one kind or another (each kind lists its own in ``params``).
KIND_PARAMS = sorted({p for k in INPUTS.values() for p in k.params})


def check_inputs(cfg: InputsConfig) -> None:
    """Raise ``ValueError`` if a field of another kind was changed from its default (it would do nothing)."""
    own = INPUTS[cfg.kind].params
    defaults = type(cfg).model_fields
    kind_params = sorted({p for k in INPUTS.values() for p in k.params})  # read now: a kind registered later counts
    stray = [p for p in kind_params if p not in own and getattr(cfg, p) != defaults[p].default]
    if stray:
        users = {p: [k for k, c in INPUTS.items() if p in c.params] for p in stray}
        raise ValueError("; ".join(f"inputs.{p} is only used by kind={'/'.join(users[p])}, not {cfg.kind!r}" for p in stray))


def check_dim(cfg: InputsConfig, d: int, d_is_default: bool) -> None:
    """Raise ``ValueError`` when the teacher's ``d`` contradicts the kind (fixed dimension, latent_dim > d)."""
    kind = INPUTS[cfg.kind]
    fixed = kind.dim(cfg, d)
    if not d_is_default and d != fixed:
        raise ValueError(f"{cfg.kind} inputs have {fixed} dimensions but teacher.d = {d}; "
                         f"drop teacher.d (the dimension follows from inputs.kind) or set it to {fixed}")
    if "latent_dim" in kind.params and cfg.latent_dim > kind.dim(cfg, d):
        raise ValueError(f"inputs.latent_dim ({cfg.latent_dim}) must not exceed the input dimension teacher.d ({d})")


def make_inputs(cfg: InputsConfig, d: int, seed: int) -> InputDistribution:
    """The distribution named by ``cfg.kind`` (``seed`` fixes any structure it draws, e.g. cluster centres)."""
    return INPUTS[cfg.kind](cfg, INPUTS[cfg.kind].dim(cfg, d), seed)


def input_dim(cfg: InputsConfig, d: int) -> int:
    return INPUTS[cfg.kind].dim(cfg, d)
