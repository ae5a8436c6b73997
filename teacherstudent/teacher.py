"""Teacher generator (docs/science.md §2).

Glossary: ``m_l`` teacher width of hidden layer ``l`` (0-based, bottom up), ``W_l`` its
weights ``[m_l, m_{l-1}]``, ``b_l`` its biases, ``C`` the number of outputs.

Each layer: random rows (a discrete grid, by default {-1, -0.75, ..., 1}, or Gaussian),
distinct after being divided by their norm; columns of every layer above the first divided
by ``(1+i)^p`` (strength decay); optional BatchNorm with fixed reference statistics folded
into the weights. Biases (``bias_mode``): ``tuned`` (default, the 2020 code) sets each so
its node fires on the requested fraction of reference inputs (a row for which no bias can,
because the quantile falls on an atom of its pre-activation, is drawn again); ``fixed``
gives every node ``bias_value``; ``uniform`` draws U(-bias_range, bias_range) (the 2019
code), optionally divided by the row's norm with the row (``bias_normalized``).
The output layer is standardised to zero mean, unit variance on the reference inputs by
default; otherwise its rows are normalised or raw grid values (``output_normalized``) with
a zero, fixed or hidden-like bias (``output_bias``).
Everything is float64 and deterministic from ``teacher.seed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports this module (no import cycle at run time)
    from .config import TeacherConfig

import math
from dataclasses import dataclass

import torch

from .errors import UserError
from .inputs import InputDistribution
from .seeds import seeded

DISCRETE_VALUES = torch.linspace(-1.0, 1.0, 9, dtype=torch.float64)


@dataclass(frozen=True)
class Teacher:
    """A fixed ReLU (or leaky-ReLU) network; ``weights[l]`` is ``[out, in]``, the last layer is the output."""

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    leaky_slope: float = 0.0

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(w.shape[0] for w in self.weights[:-1])

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Teacher:
        return Teacher(
            tuple(w.to(device, dtype) for w in self.weights),
            tuple(b.to(device, dtype) for b in self.biases),
            self.leaky_slope,
        )

    def act(self, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.leaky_relu(z, self.leaky_slope) if self.leaky_slope else torch.relu(z)

    def forward(self, x_NxD: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden post-activations ``[N, m_l]`` per layer, and the output ``[N, C]``."""
        h, hidden = x_NxD, []
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = self.act(h @ w.T + b)
            hidden.append(h)
        return hidden, h @ self.weights[-1].T + self.biases[-1]

    def __call__(self, x_NxD: torch.Tensor) -> torch.Tensor:
        return self.forward(x_NxD)[1]

    @property
    def outputs(self) -> int:
        return self.weights[-1].shape[0]

    per_member = False

    def member(self, k: int) -> Teacher:
        """The teacher of ensemble member ``k`` (the same one for every member)."""
        return self

    def fanout_norms(self, K: int) -> list[torch.Tensor]:
        """Each hidden node's fan-out norm ``||W_{l+1}[:, k]||`` as ``[K, m_l]`` (repeated over members)."""
        return [w.norm(dim=0).expand(K, -1) for w in self.weights[1:]]


@dataclass(frozen=True)
class TeacherStack:
    """One teacher per ensemble member (``teacher.seeds``): ``forward`` gives ``[K, N, m_l]``
    hidden activations and ``[K, N, C]`` outputs, member ``k`` labelled by its own teacher."""

    members: tuple[Teacher, ...]
    per_member = True

    @property
    def widths(self) -> tuple[int, ...]:
        return self.members[0].widths

    @property
    def outputs(self) -> int:
        return self.members[0].outputs

    def member(self, k: int) -> Teacher:
        return self.members[k]

    def forward(self, x_NxD: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        runs = [t.forward(x_NxD) for t in self.members]
        hidden = [torch.stack([r[0][l] for r in runs]) for l in range(len(self.widths))]
        return hidden, torch.stack([r[1] for r in runs])

    def __call__(self, x_NxD: torch.Tensor) -> torch.Tensor:
        return self.forward(x_NxD)[1]

    def fanout_norms(self, K: int) -> list[torch.Tensor]:
        return [torch.stack([t.weights[l + 1].norm(dim=0) for t in self.members]) for l in range(len(self.widths))]


def _direction(r: torch.Tensor) -> tuple[int, ...]:
    """A discrete row's direction as the primitive integer vector ``4r / gcd``."""
    ints = [int(v) for v in (r * 4).round().tolist()]
    g = math.gcd(*ints)
    return tuple(v // g for v in ints)


def _draw_rows(rows: int, cols: int, kind: str, gen: torch.Generator, seen: set[tuple] | None = None,
               grid: torch.Tensor | None = None, norms: list[float] | None = None) -> torch.Tensor:
    """``rows`` distinct non-zero random rows, each divided by its norm (distinct also from ``seen``,
    which grows); ``grid``: the discrete values (default ``DISCRETE_VALUES``); ``norms``, if
    given, receives each row's norm before normalisation."""
    out = torch.empty(rows, cols, dtype=torch.float64)
    seen = set() if seen is None else seen
    values = DISCRETE_VALUES if grid is None else grid
    i = 0
    for _ in range(1000 * rows):
        if kind == "discrete":
            r = values[torch.randint(len(values), (cols,), generator=gen)]
        else:
            r = torch.randn(cols, generator=gen, dtype=torch.float64)
        if r.norm() == 0:
            continue
        if kind != "discrete":
            key = tuple(r.tolist())
        elif grid is None:
            key = _direction(r)
        else:
            key = tuple(round(v, 9) for v in (r / r.norm()).tolist())
        if key in seen:  # distinct after normalisation: (0.25, 0.5) and (0.5, 1) are the same row
            continue
        seen.add(key)
        if norms is not None:
            norms.append(float(r.norm()))
        out[i] = r / r.norm()
        i += 1
        if i == rows:
            return out
    raise UserError(f"teacher: could not draw {rows} distinct rows of length {cols} from the discrete set; "
                    "use teacher.weights='gaussian' or fewer nodes per layer")


def _strength(cols: int, p: float) -> torch.Tensor:
    return (1.0 + torch.arange(cols, dtype=torch.float64)) ** -p


def _tune_layer(rows: torch.Tensor, h: torch.Tensor, l: int, frac: float, cfg: TeacherConfig
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights, biases and tuned pre-activations on the reference set ``h`` of hidden layer ``l``."""
    w = rows * _strength(h.shape[1], cfg.strength_decay) if l > 0 else rows
    z = h @ w.T
    if cfg.batchnorm:  # fixed statistics, folded into the weights
        mu, sd = z.mean(0), z.std(0).clamp_min(1e-12)
        w = w / sd[:, None]
        z = (z - mu) / sd
        b = -mu / sd
    else:
        b = torch.zeros(rows.shape[0], dtype=torch.float64)
    if cfg.bias and cfg.bias_mode == "tuned":
        shift = -torch.quantile(z, 1.0 - frac, dim=0)
        b, z = b + shift, z + shift
    return w, b, z


def _given_bias(cfg: TeacherConfig, n: int, norms: list[float], gen: torch.Generator) -> torch.Tensor:
    """Fixed or uniform biases of ``n`` nodes, divided by their rows' norms with ``bias_normalized``."""
    if cfg.bias_mode == "fixed":
        b = torch.full((n,), cfg.bias_value, dtype=torch.float64)
    else:
        b = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * cfg.bias_range
    return b / torch.tensor(norms, dtype=torch.float64) if cfg.bias_normalized else b


def make_teacher(cfg: TeacherConfig, inputs: InputDistribution) -> Teacher:
    """Generate the teacher of ``cfg``; ``inputs`` supplies the reference set for bias tuning."""
    gen = seeded(cfg.seed)
    ref = inputs.sample(cfg.reference_samples, gen)
    slope = cfg.leaky_slope
    act = (lambda z: torch.nn.functional.leaky_relu(z, slope)) if slope else torch.relu
    grid = torch.tensor(cfg.grid, dtype=torch.float64) if cfg.grid is not None else None
    given = cfg.bias and cfg.bias_mode != "tuned"
    weights, biases = [], []
    h = ref
    for l, (m, frac) in enumerate(zip(cfg.widths, cfg.firing_per_layer)):
        seen: set[tuple] = set()
        norms: list[float] = []
        rows = _draw_rows(m, h.shape[1], cfg.weights, gen, seen, grid, norms)
        if given:
            w, b, z = _tune_layer(rows, h, l, frac, cfg)
            extra = _given_bias(cfg, m, norms, gen)
            weights.append(w)
            biases.append(b + extra)
            h = act(z + extra)
            continue
        for _ in range(1000):
            w, b, z = _tune_layer(rows, h, l, frac, cfg)
            # Below a sparse layer, many inputs switch every node off, so a node's pre-activation has
            # an atom at 0; when the quantile falls on it no bias gives the requested firing fraction.
            # Such rows are drawn again (only then: other teachers are unchanged).
            off = ((z > 0).double().mean(0) - frac).abs() > max(0.01, 2.0 / z.shape[0]) if cfg.bias else None
            if off is None or not off.any():
                break
            rows[off] = _draw_rows(int(off.sum()), h.shape[1], cfg.weights, gen, seen)
        else:
            raise UserError(f"teacher layer {l}: could not draw rows that fire on {frac} of the reference inputs "
                            f"(the layer below is too sparse); raise teacher.firing or widen the layer below")
        weights.append(w)
        biases.append(b)
        h = act(z)
    norms = []
    w = _draw_rows(cfg.outputs, h.shape[1], cfg.weights, gen, None, grid, norms)
    if not cfg.output_normalized:  # raw grid values
        w = w * torch.tensor(norms, dtype=torch.float64)[:, None]
    w = w * _strength(h.shape[1], cfg.strength_decay)
    b = torch.zeros(cfg.outputs, dtype=torch.float64)
    if cfg.output_bias == "hidden":
        b = _given_bias(cfg, cfg.outputs, norms, gen)
    elif cfg.output_bias is not None:
        b = torch.full((cfg.outputs,), float(cfg.output_bias), dtype=torch.float64)
    if cfg.standardize_outputs:
        w, b = standardized_readout(h, w)
    weights.append(w)
    biases.append(b)
    return Teacher(tuple(weights), tuple(biases), slope)


def standardized_readout(h: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output weights and bias rescaled so that every output of ``h @ w.T`` (the reference inputs' last
    hidden layer) has mean 0 and standard deviation 1 (``teacher.standardize_outputs``)."""
    y = h @ w.T
    mu, sd = y.mean(0), y.std(0).clamp_min(1e-12)
    return w / sd[:, None], -mu / sd
