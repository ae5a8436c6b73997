"""Convolutional teachers and students (``arch='conv'``, docs/science.md §2 and §4 per channel).

Glossary: hidden layer ``l`` is a ``k x k`` convolution (``conv.kernel``, stride and padding
per layer) followed by ReLU; its *nodes* are channels: ``m_l`` teacher channels
(``teacher.widths``), ``n_l = multiplier * m_l`` student channels. ``P_l = H_l * W_l`` is the
number of spatial positions of layer ``l``; the output is a linear readout of the flattened
last layer (``[C, H, W]`` order, so channel ``c`` owns readout columns ``c*P .. (c+1)*P - 1``).
Inputs stay flat ``[N, d]`` rows and are viewed as ``[N, C_in, H, W]`` images.

Per channel, every position counts as a sample: hidden post-activations are handed to the
measurements as ``[N * P_l, C_l]`` (teacher) and ``[K, N * P_l, C_l]`` (students), sample
index ``n * P_l + p``, so the MLP's correlation code measures channels unchanged. The
fan-out norm of a channel is the norm of everything the next layer reads from it: the next
convolution's weights of that input channel (over out-channels x kernel positions), or the
readout's columns of that channel.

The teacher follows teacher.py: rows drawn from the same grid (or Gaussian), distinct after
normalisation, each of length ``C_{l-1} k^2``; input channel ``i`` of every layer above the
first (and of the readout) divided by ``(1+i)^p``; each channel's bias tuned so that it fires
on ``teacher.firing`` of the reference inputs x positions; outputs standardised.

Students: ``K`` members stacked as ``W_l: [K, n_l, n_{l-1}, k, k]``, computed as one
grouped convolution per layer (``groups=K`` on ``[B, K*n_l, H, W]``; the first layer
shares its input, so it is one ordinary convolution with ``K*n_0`` output channels). That
was faster than a loop over members and than ``torch.func.vmap`` (benchmarks/conv_bench.py,
benchmarks/RESULTS.md). Member ``k`` computes what an ``nn.Sequential`` of ``nn.Conv2d``,
(``nn.BatchNorm2d``), ``nn.ReLU``, ``nn.Flatten`` and ``nn.Linear`` with its weights computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .ensemble import StackedStudents, init_layer
from .errors import UserError
from .seeds import seeded
from .teacher import _draw_rows, _strength, standardized_readout

if TYPE_CHECKING:  # config imports this module through architectures (no cycle at run time)
    from .config import ExperimentConfig, StudentConfig
    from .inputs import InputDistribution


@dataclass(frozen=True)
class Geometry:
    """Input image ``(C_in, H, W)``, kernel size and per-layer stride and padding."""

    image: tuple[int, int, int]
    kernel: int
    strides: tuple[int, ...]
    paddings: tuple[int, ...]

    def sizes(self) -> list[tuple[int, int]]:
        """``(H_l, W_l)`` of every hidden layer (non-positive when the kernel does not fit)."""
        h, w = self.image[1:]
        out = []
        for s, p in zip(self.strides, self.paddings):
            h, w = (h + 2 * p - self.kernel) // s + 1, (w + 2 * p - self.kernel) // s + 1
            out.append((h, w))
            if h <= 0 or w <= 0:
                break
        return out

    def positions(self) -> list[int]:
        return [h * w for h, w in self.sizes()]


def per_layer(v: int | tuple[int, ...], L: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, tuple) else (v,) * L


def geometry(cfg: ExperimentConfig) -> Geometry:
    from .inputs import INPUTS

    L = len(cfg.teacher.widths)
    image = INPUTS[cfg.inputs.kind].image_shape(cfg.inputs)
    return Geometry(image, cfg.conv.kernel, per_layer(cfg.conv.stride, L), per_layer(cfg.conv.padding, L))


def fanout_norms(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """Fan-out norm ``[K, n_l]`` of every hidden channel from stacked weights (conv ``[K, out, in, k, k]``,
    readout ``[K, C, n_L * P_L]``)."""
    out = []
    for w, nxt in zip(weights[:-1], weights[1:]):
        K, n = w.shape[:2]
        cols = nxt.transpose(1, 2) if nxt.dim() == 5 else nxt.reshape(K, nxt.shape[1], n, -1).transpose(1, 2)
        out.append(torch.linalg.vector_norm(cols.reshape(K, n, -1), dim=2))
    return out


def as_samples(h_NxCxHxW: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N * H * W, C]``: every position of every image a sample of each channel."""
    return h_NxCxHxW.permute(0, 2, 3, 1).reshape(-1, h_NxCxHxW.shape[1])


# ---- teacher ------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvTeacher:
    """A fixed convolutional ReLU teacher; ``weights[l]``: ``[m_l, m_{l-1}, k, k]``, last: readout ``[C, m_L P_L]``."""

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    geom: Geometry
    leaky_slope: float = 0.0
    per_member = False

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(w.shape[0] for w in self.weights[:-1])

    @property
    def outputs(self) -> int:
        return self.weights[-1].shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype) -> ConvTeacher:
        return ConvTeacher(tuple(w.to(device, dtype) for w in self.weights), tuple(b.to(device, dtype) for b in self.biases),
                           self.geom, self.leaky_slope)

    def act(self, z: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(z, self.leaky_slope) if self.leaky_slope else torch.relu(z)

    def maps(self, x_NxD: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden feature maps ``[N, m_l, H_l, W_l]`` and the output ``[N, C]``."""
        g = self.geom
        h, hidden = x_NxD.reshape(-1, *g.image), []
        for w, b, s, p in zip(self.weights[:-1], self.biases[:-1], g.strides, g.paddings):
            h = self.act(F.conv2d(h, w, b, stride=s, padding=p))
            hidden.append(h)
        return hidden, h.flatten(1) @ self.weights[-1].T + self.biases[-1]

    def forward(self, x_NxD: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden post-activations ``[N * P_l, m_l]`` per layer (positions as samples) and the output ``[N, C]``."""
        hidden, out = self.maps(x_NxD)
        return [as_samples(h) for h in hidden], out

    def __call__(self, x_NxD: torch.Tensor) -> torch.Tensor:
        return self.maps(x_NxD)[1]

    def member(self, k: int) -> ConvTeacher:
        return self

    def fanout_norms(self, K: int) -> list[torch.Tensor]:
        return [f[0].expand(K, -1) for f in fanout_norms([w[None] for w in self.weights])]


def _tune_channels(rows: torch.Tensor, h: torch.Tensor, l: int, frac: float, t, g: Geometry
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights, biases and tuned pre-activation maps of conv layer ``l`` on the reference maps ``h``."""
    cin, k = h.shape[1], g.kernel
    w = rows.reshape(-1, cin, k, k)
    if l > 0:
        w = w * _strength(cin, t.strength_decay)[None, :, None, None]
    z = F.conv2d(h, w, stride=g.strides[l], padding=g.paddings[l])
    b = torch.zeros(w.shape[0], dtype=torch.float64)
    if t.bias:  # bias_mode='tuned' (config refuses the others for conv): per channel, over inputs x positions
        b = -torch.stack([torch.quantile(zc, 1.0 - frac) for zc in z.transpose(0, 1).reshape(w.shape[0], -1)])
        z = z + b[None, :, None, None]
    return w, b, z


def make_conv_teacher(cfg: ExperimentConfig, inputs: InputDistribution) -> ConvTeacher:
    """The convolutional teacher of ``cfg`` (float64, CPU); ``inputs`` supplies the reference images."""
    t, g = cfg.teacher, geometry(cfg)
    gen = seeded(t.seed)
    h = inputs.sample(t.reference_samples, gen).reshape(-1, *g.image)
    slope = t.leaky_slope
    act = (lambda z: F.leaky_relu(z, slope)) if slope else torch.relu
    grid = torch.tensor(t.grid, dtype=torch.float64) if t.grid is not None else None
    weights, biases = [], []
    for l, (m, frac) in enumerate(zip(t.widths, t.firing_per_layer)):
        seen: set[tuple] = set()
        fan = h.shape[1] * g.kernel**2
        rows = _draw_rows(m, fan, t.weights, gen, seen, grid)
        for _ in range(1000):
            w, b, z = _tune_channels(rows, h, l, frac, t, g)
            fires = (z > 0).transpose(0, 1).reshape(m, -1).double().mean(1)
            off = (fires - frac).abs() > max(0.01, 2.0 / z[:, 0].numel()) if t.bias else None
            if off is None or not off.any():
                break
            rows[off] = _draw_rows(int(off.sum()), fan, t.weights, gen, seen, grid)
        else:
            raise UserError(f"teacher layer {l}: could not draw channels that fire on {frac} of the reference inputs x "
                            "positions (the layer below is too sparse); raise teacher.firing or widen the layer below")
        weights.append(w)
        biases.append(b)
        h = act(z)
    h = h.flatten(1)
    P = h.shape[1] // t.widths[-1]
    norms: list[float] = []
    w = _draw_rows(t.outputs, h.shape[1], t.weights, gen, None, grid, norms)
    if not t.output_normalized:
        w = w * torch.tensor(norms, dtype=torch.float64)[:, None]
    w = w * _strength(t.widths[-1], t.strength_decay).repeat_interleave(P)
    b = torch.zeros(t.outputs, dtype=torch.float64)
    if t.output_bias is not None:  # a number (config refuses 'hidden' for conv)
        b = torch.full((t.outputs,), float(t.output_bias), dtype=torch.float64)
    if t.standardize_outputs:
        w, b = standardized_readout(h, w)
    weights.append(w)
    biases.append(b)
    return ConvTeacher(tuple(weights), tuple(biases), g, slope)


# ---- students -------------------------------------------------------------------------

def layer_shapes(widths: list[int], outputs: int, g: Geometry) -> list[tuple[int, ...]]:
    """Weight shapes of one student: ``[n_l, n_{l-1}, k, k]`` per conv layer, then ``[C, n_L P_L]``."""
    ins = [g.image[0], *widths[:-1]]
    return [(n, i, g.kernel, g.kernel) for n, i in zip(widths, ins)] + [(outputs, widths[-1] * g.positions()[-1])]


def init_conv_member(widths: list[int], outputs: int, g: Geometry, seed: int, cfg: StudentConfig) -> list[torch.Tensor]:
    """Initial ``[W_0, b_0, ..., R, r]`` of one student (float64, CPU), drawn as ensemble.init_member draws
    (``ensemble.init_layer`` per layer; ``pytorch``: ``nn.Conv2d``/``nn.Linear``'s default U(+-1/sqrt(fan_in)),
    fan_in = ``n_{l-1} k^2``)."""
    gen = seeded(seed)
    shapes = layer_shapes(widths, outputs, g)
    stds = cfg.init_std if isinstance(cfg.init_std, tuple) else (cfg.init_std,) * len(shapes)
    return [t for shape, std in zip(shapes, stds) for t in init_layer(shape, std, cfg, gen)]


class ConvEnsemble(StackedStudents):
    """K convolutional students. ``params`` = ``[W_0, b_0, ..., R, r]`` with a leading K axis
    (``W_l: [K, n_l, n_{l-1}, k, k]``, ``b_l: [K, n_l]``, readout ``R: [K, C, n_L P_L]``).

    With ``batchnorm``, every conv layer normalises per member and channel over batch and
    positions, as ``nn.BatchNorm2d`` (``gamma``/``beta``/running statistics ``[K, n_l]``).
    """

    BN_MOMENTUM = 0.1
    BN_EPS = 1e-5

    def __init__(self, params: list[torch.Tensor], geom: Geometry, batchnorm: bool = False):
        self.params, self.geom, self.batchnorm = params, geom, batchnorm
        self.bn_params: list[torch.Tensor] = []
        self.bn_buffers: list[torch.Tensor] = []
        if batchnorm:
            for w in self.weights[:-1]:
                K, n = w.shape[:2]
                new = lambda v: torch.full((K, n), v, dtype=w.dtype, device=w.device)  # noqa: E731
                self.bn_params += [new(1.0), new(0.0)]
                self.bn_buffers += [new(0.0), new(1.0)]

    @classmethod
    def create(cls, widths: list[int], outputs: int, geom: Geometry, cfg: StudentConfig, device, dtype) -> ConvEnsemble:
        members = [init_conv_member(widths, outputs, geom, s, cfg) for s in cfg.seeds]
        params = [torch.stack([m[i] for m in members]).to(device, dtype) for i in range(len(members[0]))]
        return cls(params, geom, cfg.batchnorm)

    def with_params(self, params: list[torch.Tensor]) -> ConvEnsemble:
        return ConvEnsemble(params, self.geom)

    def fanout_norms(self) -> list[torch.Tensor]:
        return fanout_norms([w.detach() for w in self.weights])

    # ---- computation ---------------------------------------------------------------------
    def maps(self, x: torch.Tensor, train: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``x``: ``[B, d]`` shared by every member. Hidden maps ``[B, K*n_l, H_l, W_l]`` (member-major
        channels) and the output ``[K, B, C]``."""
        g, K = self.geom, self.K
        h = x.reshape(-1, *g.image)
        hidden = []
        for l, (w, b) in enumerate(zip(self.weights[:-1], self.biases[:-1])):
            z = F.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), stride=g.strides[l], padding=g.paddings[l],
                         groups=1 if l == 0 else K)
            if self.batchnorm:
                gamma, beta = self.bn_params[2 * l], self.bn_params[2 * l + 1]
                mean, var = self.bn_buffers[2 * l], self.bn_buffers[2 * l + 1]
                z = F.batch_norm(z, mean.view(-1), var.view(-1), gamma.reshape(-1), beta.reshape(-1), train,
                                 self.BN_MOMENTUM, self.BN_EPS)
            h = torch.relu(z)
            hidden.append(h)
        B = h.shape[0]
        flat = h.reshape(B, K, -1).transpose(0, 1)  # [K, B, n_L P_L]
        out = torch.baddbmm(self.biases[-1][:, None, :], flat, self.weights[-1].transpose(1, 2))
        return hidden, out

    def forward(self, x: torch.Tensor, train: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden post-activations ``[K, B * P_l, n_l]`` per layer (positions as samples) and the output ``[K, B, C]``."""
        hidden, out = self.maps(x, train)
        K = self.K
        return [h.reshape(h.shape[0], K, -1, h.shape[2] * h.shape[3]).permute(1, 0, 3, 2).reshape(K, -1, h.shape[1] // K)
                for h in hidden], out

    def forward_T(self, x: torch.Tensor, ws: dict | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Feature-major evaluation forward for ``measure``: hidden ``[K, n_l, B * P_l]``, output ``[K, C, B]``."""
        hidden, out = self.maps(x, train=False)
        K = self.K
        return [h.reshape(h.shape[0], K, h.shape[1] // K, -1).permute(1, 2, 0, 3).reshape(K, h.shape[1] // K, -1)
                for h in hidden], out.transpose(1, 2)

    def output(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        return self.maps(x, train)[1]


def as_modules(ens: ConvEnsemble) -> list[torch.nn.Sequential]:
    """Member-by-member ``nn.Sequential`` of ``nn.Conv2d``/``nn.ReLU``/``nn.Flatten``/``nn.Linear``
    (with ``nn.BatchNorm2d`` when the ensemble has it): the plain reference."""
    g = ens.geom
    nets = []
    for k in range(ens.K):
        layers: list[torch.nn.Module] = []
        for l, (w, b) in enumerate(zip(ens.weights[:-1], ens.biases[:-1])):
            conv = torch.nn.Conv2d(w.shape[2], w.shape[1], g.kernel, g.strides[l], g.paddings[l], dtype=w.dtype, device=w.device)
            with torch.no_grad():
                conv.weight.copy_(w[k])
                conv.bias.copy_(b[k])
            layers.append(conv)
            if ens.batchnorm:
                bn = torch.nn.BatchNorm2d(w.shape[1], eps=ens.BN_EPS, momentum=ens.BN_MOMENTUM, dtype=w.dtype, device=w.device)
                with torch.no_grad():
                    bn.weight.copy_(ens.bn_params[2 * l][k])
                    bn.bias.copy_(ens.bn_params[2 * l + 1][k])
                    bn.running_mean.copy_(ens.bn_buffers[2 * l][k])
                    bn.running_var.copy_(ens.bn_buffers[2 * l + 1][k])
                layers.append(bn)
            layers.append(torch.nn.ReLU())
        R, r = ens.weights[-1], ens.biases[-1]
        lin = torch.nn.Linear(R.shape[2], R.shape[1], dtype=R.dtype, device=R.device)
        with torch.no_grad():
            lin.weight.copy_(R[k])
            lin.bias.copy_(r[k])
        nets.append(torch.nn.Sequential(torch.nn.Unflatten(1, g.image), *layers, torch.nn.Flatten(), lin))
    return nets
