"""K students trained together as one batched computation.

Glossary: ``K`` ensemble members (one per student seed), ``n_l`` student width of hidden
layer ``l`` (``multiplier * m_l``), ``B`` batch size. Weights are stacked per layer as
``W[l]: [K, n_l, n_{l-1}]`` and biases as ``b[l]: [K, n_l]``; the last entry is the
output layer. Member ``k`` computes exactly what an ordinary ``nn.Sequential`` of
``nn.Linear``/``nn.ReLU`` with the same weights computes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports this module (no import cycle at run time)
    from .config import StudentConfig

import math

import torch

from .seeds import seeded


# torch.nn.init's weight initialisations (student.init), on a ``[n_out, n_in]`` weight like nn.Linear's
NN_INITS = {
    "kaiming_normal": lambda w, gen: torch.nn.init.kaiming_normal_(w, nonlinearity="relu", generator=gen),
    "kaiming_uniform": lambda w, gen: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=gen),
    "xavier_normal": lambda w, gen: torch.nn.init.xavier_normal_(w, generator=gen),
    "xavier_uniform": lambda w, gen: torch.nn.init.xavier_uniform_(w, generator=gen),
    "orthogonal": lambda w, gen: torch.nn.init.orthogonal_(w, generator=gen),
}


def init_member(widths: list[int], d: int, outputs: int, seed: int, cfg: StudentConfig) -> list[torch.Tensor]:
    """Initial ``[W_0, b_0, W_1, b_1, ..., W_out, b_out]`` of one student (float64, CPU).

    ``pytorch``: ``nn.Linear``'s default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights
    and biases. ``scaled``: weights N(0, init_scale^2 / fan_in), zero biases. ``normal``:
    weights N(0, init_std^2) (one std, or one per weight layer), zero biases. ``NN_INITS``
    (kaiming, xavier, orthogonal): ``torch.nn.init``'s, layer by layer from the seed's
    generator, zero biases. Every init but ``normal`` multiplies its weights by ``init_scale``.
    """
    gen = seeded(seed)
    params = []
    fan_in = d
    layers = [*widths, outputs]
    stds = cfg.init_std if isinstance(cfg.init_std, tuple) else (cfg.init_std,) * len(layers)
    for n, std in zip(layers, stds):
        params += init_layer((n, fan_in), std, cfg, gen)
        fan_in = n
    return params


def init_layer(shape: tuple[int, ...], std: float, cfg: StudentConfig, gen: torch.Generator) -> list[torch.Tensor]:
    """One layer's ``[weight, bias]`` (float64) of weight ``shape`` = ``(n_out, *fan_in dims)`` as ``cfg.init``
    draws it (see ``init_member``); fan-in is the product of every dimension but the first
    (a convolution's ``n_in k k``), as ``nn.Linear``/``nn.Conv2d`` and ``torch.nn.init`` count it."""
    n, fan_in = shape[0], math.prod(shape[1:])
    if cfg.init == "normal":
        return [torch.randn(shape, generator=gen, dtype=torch.float64) * std, torch.zeros(n, dtype=torch.float64)]
    if cfg.init == "pytorch":
        bound = 1.0 / math.sqrt(fan_in)
        w = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        b = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        return [w * cfg.init_scale if cfg.init_scale != 1 else w, b]
    if cfg.init in NN_INITS:
        return [NN_INITS[cfg.init](torch.empty(shape, dtype=torch.float64), gen) * cfg.init_scale,
                torch.zeros(n, dtype=torch.float64)]
    w = torch.randn(shape, generator=gen, dtype=torch.float64) * (cfg.init_scale / math.sqrt(fan_in))
    return [w, torch.zeros(n, dtype=torch.float64)]


class StackedStudents:
    """What every ensemble of stacked students shares: ``params`` = ``[W_0, b_0, ..., W_out, b_out]``
    with a leading K axis, BatchNorm ``bn_params``/``bn_buffers``, and their views."""

    params: list[torch.Tensor]
    bn_params: list[torch.Tensor]
    bn_buffers: list[torch.Tensor]

    @property
    def weights(self) -> list[torch.Tensor]:
        return self.params[0::2]

    @property
    def biases(self) -> list[torch.Tensor]:
        return self.params[1::2]

    @property
    def K(self) -> int:
        return self.params[0].shape[0]

    @property
    def trainable(self) -> list[torch.Tensor]:
        return self.params + self.bn_params

    def state(self) -> list[torch.Tensor]:
        """Everything that defines the students (parameters and BatchNorm buffers)."""
        return self.params + self.bn_params + self.bn_buffers

    def load_state(self, tensors: list[torch.Tensor]) -> None:
        for dst, src in zip(self.state(), tensors, strict=True):
            with torch.no_grad():
                dst.copy_(src)

    def with_params(self, params: list[torch.Tensor]) -> StackedStudents:
        """An ensemble of this kind (and geometry) over ``params``, without BatchNorm state."""
        raise NotImplementedError

    def slice(self, k0: int, k1: int) -> StackedStudents:
        """Members ``k0..k1-1`` as an ensemble sharing storage with this one."""
        sub = self.with_params([p[k0:k1] for p in self.params])
        sub.batchnorm = self.batchnorm
        sub.bn_params = [p[k0:k1] for p in self.bn_params]
        sub.bn_buffers = [p[k0:k1] for p in self.bn_buffers]
        return sub


class Ensemble(StackedStudents):
    """Stacked students. ``params`` = ``[W_0, b_0, ..., W_out, b_out]``, each with a leading K axis.

    With ``batchnorm``, every hidden layer normalises its pre-activations over the batch
    (training) or with running statistics (evaluation), followed by a per-node affine
    ``gamma``/``beta``, as ``nn.BatchNorm1d`` does.
    """

    BN_MOMENTUM = 0.1
    BN_EPS = 1e-5

    def __init__(self, params: list[torch.Tensor], batchnorm: bool = False):
        self.params = params
        self.batchnorm = batchnorm
        self.bn_params: list[torch.Tensor] = []  # gamma_0, beta_0, gamma_1, ...
        self.bn_buffers: list[torch.Tensor] = []  # running mean_0, var_0, ...
        if batchnorm:
            for w in self.weights[:-1]:
                K, n = w.shape[:2]
                self.bn_params += [torch.ones(K, n, dtype=w.dtype, device=w.device), torch.zeros(K, n, dtype=w.dtype, device=w.device)]
                self.bn_buffers += [torch.zeros(K, n, dtype=w.dtype, device=w.device), torch.ones(K, n, dtype=w.dtype, device=w.device)]

    @classmethod
    def create(cls, widths: list[int], d: int, outputs: int, cfg: StudentConfig, device, dtype) -> Ensemble:
        members = [init_member(widths, d, outputs, s, cfg) for s in cfg.seeds]
        params = [torch.stack([m[i] for m in members]).to(device, dtype) for i in range(len(members[0]))]
        return cls(params, cfg.batchnorm)

    def with_params(self, params: list[torch.Tensor]) -> Ensemble:
        return Ensemble(params)

    def fanout_norms(self) -> list[torch.Tensor]:
        """``||W_{l+1}[:, j]||`` for every hidden node: ``[K, n_l]`` per layer."""
        return [w.detach().norm(dim=1) for w in self.weights[1:]]

    # ---- computation ------------------------------------------------------
    def forward(self, x: torch.Tensor, train: bool = False,
                masks: list[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``x``: ``[B, d]`` shared by all members (or ``[K, B, d]``); ``masks``: dropout masks
        ``[K, B, n_l]`` (0 or ``1 / (1 - p)``) multiplied into the hidden post-activations.

        Returns the hidden post-activations ``[K, B, n_l]`` per layer and the output ``[K, B, C]``.
        """
        hidden = []
        h = x
        for l, (w, b) in enumerate(zip(self.weights[:-1], self.biases[:-1])):
            z = torch.matmul(h, w.transpose(1, 2)) + b[:, None, :]
            if self.batchnorm:
                z = self._bn(z, l, train)
            h = torch.relu(z)
            if masks is not None:
                h = h * masks[l]
            hidden.append(h)
        out = torch.baddbmm(self.biases[-1][:, None, :], h, self.weights[-1].transpose(1, 2))
        return hidden, out

    def _bn(self, z: torch.Tensor, l: int, train: bool) -> torch.Tensor:
        gamma, beta = self.bn_params[2 * l], self.bn_params[2 * l + 1]
        run_mean, run_var = self.bn_buffers[2 * l], self.bn_buffers[2 * l + 1]
        if train:
            mean = z.mean(1)
            var = z.var(1, unbiased=False)
            B = z.shape[1]
            with torch.no_grad():
                run_mean.lerp_(mean.detach(), self.BN_MOMENTUM)
                run_var.lerp_(var.detach() * (B / max(B - 1, 1)), self.BN_MOMENTUM)
        else:
            mean, var = run_mean, run_var
        return (z - mean[:, None, :]) / torch.sqrt(var[:, None, :] + self.BN_EPS) * gamma[:, None, :] + beta[:, None, :]

    def output(self, x: torch.Tensor, train: bool = False, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.forward(x, train, masks)[1]


def as_modules(ens: Ensemble) -> list[torch.nn.Sequential]:
    """Member-by-member ``nn.Sequential`` copies (no BatchNorm): the plain reference."""
    nets = []
    for k in range(ens.K):
        layers: list[torch.nn.Module] = []
        for w, b in zip(ens.weights, ens.biases):
            lin = torch.nn.Linear(w.shape[2], w.shape[1], dtype=w.dtype, device=w.device)
            with torch.no_grad():
                lin.weight.copy_(w[k])
                lin.bias.copy_(b[k])
            layers += [lin, torch.nn.ReLU()]
        nets.append(torch.nn.Sequential(*layers[:-1]))
    return nets
