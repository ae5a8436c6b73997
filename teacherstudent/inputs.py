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
mnist,     path                             the data set read from the local folder ``path``
fashion_                                    (teacherstudent/datasets.py; never downloaded):
mnist,                                      1x28x28 (d = 784) or 3x32x32 (d = 3072) images,
cifar10                                     standardised per channel on the training split,
                                            times sigma
========== ================================ ==================================================

Image kinds (``image_shape`` not None: ``digits`` as 1x8x8, ``gaussian_images``) can feed
convolutional teachers and students (``arch='conv'``, teacherstudent/conv.py); every kind
still hands out flat ``[N, d]`` rows, which a convolution views as ``[N, C, H, W]``.

``digits`` is a finite data set: a ``holdout`` fraction of the images (chosen once) is the
evaluation pool, the rest the training pool (``mnist``, ``fashion_mnist`` and ``cifar10``:
their official training and test splits). A draw of ``n`` images from a pool takes
whole random passes over it (no image twice before every image once), so a set no larger
than its pool has no repeats. Its true digit labels travel with it (``Draw.label``), as
do the cluster indices of ``clusters``; ``classes`` (10) says a kind's labels are classes
that students may train on (``inputs.labels='dataset'``) and a teacher may be trained on
(``teacher.train``, teacherstudent/pretrain.py).

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
    classes: ClassVar[int | None] = None  # labelled data sets: the number of classes of Draw.label

    @classmethod
    def check(cls, cfg: InputsConfig) -> None:
        """Raise ``ValueError`` for a config this kind cannot use (config validation; reads no files)."""

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


class Finite(InputDistribution):
    """A finite labelled data set: ``pools[split]`` indexes its images, ``labels`` their classes;
    ``images(idx)`` gives the inputs of images ``idx``; a draw takes whole random passes over a pool."""

    classes = 10
    pools: dict[str, torch.Tensor]
    labels: torch.Tensor

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def take(self, split: str, positions: torch.Tensor) -> Draw:
        """Images at ``positions`` of the ``split`` pool, with their labels."""
        idx = self.pools[split][positions]
        return Draw(self.images(idx), self.labels[idx])

    def draw(self, n: int, gen: torch.Generator, split: str = "train") -> Draw:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        size = len(self.pools[split])
        passes = [torch.randperm(size, generator=gen) for _ in range(-(-n // size))]
        return self.take(split, torch.cat(passes)[:n])


class Digits(Finite):
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

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x[idx]


class LocalImages(Finite):
    """An image data set read from the folder ``inputs.path`` (teacherstudent/datasets.py): its official
    training split is the training pool, its test split the evaluation pool. Pixels are standardised
    per channel (mean and standard deviation over the training split's images and positions; a
    constant channel stays 0), times sigma. Images are kept as bytes and converted when drawn."""

    params = ("path",)
    shape: ClassVar[tuple[int, int, int]]

    @classmethod
    def check(cls, cfg: InputsConfig) -> None:
        if cfg.path is None:
            from .datasets import expected

            raise ValueError(f"inputs.kind={cfg.kind!r} reads local files: set inputs.path to their folder ({expected(cfg.kind)})")

    @classmethod
    def dim(cls, cfg: InputsConfig, d: int) -> int:
        return math.prod(cls.shape)

    @classmethod
    def image_shape(cls, cfg: InputsConfig) -> tuple[int, int, int]:
        return cls.shape

    def __init__(self, cfg: InputsConfig, d: int, seed: int):
        super().__init__(cfg, d, seed)
        from .datasets import read

        a = read(cfg.kind, cfg.path)
        n_train = len(a.train_x)
        self.raw = torch.from_numpy(np.concatenate([a.train_x, a.test_x]).reshape(n_train + len(a.test_x), -1))
        self.labels = torch.from_numpy(np.concatenate([a.train_y, a.test_y]))
        self.pools = {"train": torch.arange(n_train), "eval": torch.arange(n_train, len(self.raw))}
        c = self.shape[0]
        counts = np.stack([np.bincount(a.train_x[:, ch].ravel(), minlength=256) for ch in range(c)])  # [C, 256]
        v = np.arange(256, dtype=np.int64)
        s1, s2, n = counts @ v, counts @ v**2, int(counts[0].sum())  # exact integer sums per channel
        self.mean = torch.from_numpy(s1 / n)
        self.std = torch.from_numpy(np.sqrt(np.maximum(s2 - s1 * (s1 / n), 0) / max(n - 1, 1)))

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.raw[idx].to(torch.float64).view(len(idx), self.shape[0], -1)
        sd = self.std[:, None]
        x = torch.where(sd > 0, (x - self.mean[:, None]) / sd.clamp_min(1e-12), 0.0) * self.cfg.sigma
        return x.reshape(len(idx), -1)


class Mnist(LocalImages):
    shape = (1, 28, 28)


class FashionMnist(LocalImages):
    shape = (1, 28, 28)


class Cifar10(LocalImages):
    shape = (3, 32, 32)


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
    "mnist": Mnist,
    "fashion_mnist": FashionMnist,
    "cifar10": Cifar10,
}

# The InputsConfig fields that belong to one kind or another (each kind lists its own in ``params``).
KIND_PARAMS = sorted({p for k in INPUTS.values() for p in k.params})


def check_inputs(cfg: InputsConfig) -> None:
    """Raise ``ValueError`` if a field of another kind was changed from its default (it would do nothing)."""
    INPUTS[cfg.kind].check(cfg)
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


def check_classes(cfg: InputsConfig, outputs: int, loss: str, what: str) -> None:
    """Raise ``ValueError`` unless ``what`` (``inputs.labels='dataset'`` or ``teacher.train``), which learns the
    data set's own labels, has a labelled kind and as many teacher outputs as classes (and, with ``loss``, cross-entropy)."""
    classes = INPUTS[cfg.kind].classes
    if classes is None:
        labelled = ", ".join(k for k, c in INPUTS.items() if c.classes is not None)
        raise ValueError(f"{what} learns a data set's own labels; set inputs.kind to one of {labelled} (got {cfg.kind!r})")
    if outputs != classes:
        raise ValueError(f"{what} learns the {classes} classes of {cfg.kind}: set teacher.outputs={classes} (the "
                         f"students' outputs are the teacher's), got {outputs}")
    if loss is not None and loss != "ce":
        raise ValueError(f"{what} trains the students on class labels: set training.loss='ce' (got {loss!r})")
