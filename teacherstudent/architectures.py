"""Architectures (``arch``): how a config becomes its teacher and its student ensemble.

``ARCHITECTURES[name]`` is one small class per architecture: ``check(cfg)`` (raise
``ValueError`` for settings that do nothing or are not supported under it; called by
config validation), ``teacher(cfg, inputs)``, ``students(cfg, teacher, d, device, dtype)``,
and for the probes ``ensemble(cfg, params, batchnorm)`` (an ensemble from a state),
``fresh_params(cfg, widths, seeds)`` (fresh float64 initial weights of given hidden widths,
one member per seed), ``fanout(params)`` (each hidden node's fan-out norm ``[K, n_l]``) and
``prune(state, kept, batchnorm)`` (the state keeping nodes ``kept``).

``mlp``: the stacked fully connected students (ensemble.py); ``conv``: convolutional
teacher and students (conv.py), whose nodes are channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # config imports this module (no import cycle at run time)
    import torch

    from .config import ExperimentConfig


class Architecture:
    name: ClassVar[str] = ""

    def check(self, cfg: ExperimentConfig) -> None:
        pass

    def teacher(self, cfg: ExperimentConfig, inputs) -> Any:
        raise NotImplementedError

    def students(self, cfg: ExperimentConfig, teacher, d: int, device, dtype) -> Any:
        raise NotImplementedError

    def ensemble(self, cfg: ExperimentConfig, params: list[torch.Tensor], batchnorm: bool) -> Any:
        raise NotImplementedError

    def fresh_params(self, cfg: ExperimentConfig, widths: list[int], seeds: list[int]) -> list[torch.Tensor]:
        raise NotImplementedError

    def fanout(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def prune(self, state: list[torch.Tensor], kept: list[torch.Tensor], batchnorm: bool) -> list[torch.Tensor]:
        raise NotImplementedError

    def positions(self, cfg: ExperimentConfig) -> list[int]:
        """Activations each hidden node (channel) has per sample, per layer: 1 for fully connected layers."""
        return [1] * len(cfg.teacher.widths)

    def ensemble_positions(self, ens) -> list[int]:
        """``positions`` read off built students (``build`` asks the students, not the config)."""
        return [1] * (len(ens.weights) - 1)

    def param_count(self, cfg: ExperimentConfig, d: int) -> int:
        """Weights and biases of one student (``d`` inputs), for the memory estimates."""
        dims = [d, *(cfg.student.multiplier * w for w in cfg.teacher.widths), cfg.teacher.outputs]
        return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))

    def sizes(self, cfg: ExperimentConfig, d: int) -> tuple[int, list[int]]:
        """What the memory estimate (resources.py) asks of an architecture, in one call:
        ``(param_count(cfg, d), positions(cfg))``."""
        return self.param_count(cfg, d), self.positions(cfg)


def _stack(members: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    import torch

    return [torch.stack([m[i] for m in members]) for i in range(len(members[0]))]


class Mlp(Architecture):
    name = "mlp"

    def teacher(self, cfg, inputs):
        from .labels import data_teacher
        from .pretrain import pretrained

        return pretrained(cfg, inputs, data_teacher)  # inputs.labels may widen it; teacher.train trains it

    def students(self, cfg, teacher, d, device, dtype):
        from .ensemble import Ensemble
        from .lucky import plant_lucky

        widths = [cfg.student.multiplier * m for m in cfg.teacher.widths]
        ens = Ensemble.create(widths, d, teacher.outputs, cfg.student, device, dtype)
        s = cfg.student
        plant_lucky(ens, teacher, s.lucky_nodes, s.lucky_noise, tuple(s.seeds))  # a no-op at lucky_nodes = 0
        return ens

    def ensemble(self, cfg, params, batchnorm):
        from .ensemble import Ensemble

        return Ensemble(params, batchnorm)

    def fresh_params(self, cfg, widths, seeds):
        from .ensemble import init_member
        from .inputs import input_dim

        d, outputs = input_dim(cfg.inputs, cfg.teacher.d), cfg.teacher.outputs
        return _stack([init_member(widths, d, outputs, s, cfg.student) for s in seeds])

    def fanout(self, params):
        from .pruning import fanout_scores

        return fanout_scores(params)

    def prune(self, state, kept, batchnorm):
        from .pruning import prune_nodes

        return prune_nodes(state, kept, batchnorm)


THEORY_MAX_UNITS = 4096  # theory statistics of conv students: flattened student units per layer, at most


class Conv(Architecture):
    """Convolutional teacher and students: ``teacher.widths`` are channels per layer, ``[conv]`` the geometry."""

    name = "conv"

    def check(self, cfg) -> None:
        from .conv import geometry
        from .inputs import INPUTS

        t, i, s, tr = cfg.teacher, cfg.inputs, cfg.student, cfg.training
        if INPUTS[i.kind].image_shape(i) is None:
            images = sorted(k for k, c in INPUTS.items() if c.image_shape(i) is not None)
            raise ValueError(f"arch='conv' needs image inputs; set inputs.kind to one of {', '.join(images)} "
                             f"(got {i.kind!r})")
        unused = [f"teacher.{f}" for f in t.changed("d")]
        if unused:
            raise ValueError(f"{', '.join(unused)} does nothing with arch='conv' (the input size follows from the "
                             "image inputs: inputs.image_channels/image_size); drop it")
        refused = [name for name, on in (
            ("teacher.seeds", t.seeds is not None), ("teacher.batchnorm", t.batchnorm),
            ("teacher.bias_mode='fixed'/'uniform' (conv tunes biases per channel)", t.bias and t.bias_mode != "tuned"),
            ("inputs.labels='wide_teacher'/'permuted'", i.labels not in ("teacher", "dataset")), ("student.lucky_nodes", s.lucky_nodes != 0),
            ("training.backend='fast' (conv trains with autograd)", tr.backend == "fast"),
            ("training.renorm", tr.renorm != "none"), ("training.dropout", tr.dropout > 0),
        ) if on]
        if refused:
            raise ValueError(f"arch='conv' does not support {', '.join(refused)}; drop {'it' if len(refused) == 1 else 'them'} "
                             "or use arch='mlp'")
        L = len(t.widths)
        for name in ("stride", "padding"):
            v = getattr(cfg.conv, name)
            if isinstance(v, tuple) and len(v) != L:
                raise ValueError(f"conv.{name} has {len(v)} values but the teacher has {L} conv layers (teacher.widths); "
                                 "give one value or one per layer")
        g = geometry(cfg)
        sizes = g.sizes()
        if len(sizes) < L or min(min(hw) for hw in sizes) <= 0:
            raise ValueError(f"conv layer {len(sizes) - 1} has no output positions: a {g.kernel}x{g.kernel} kernel "
                             f"does not fit the {g.image[1]}x{g.image[2]} image after the strides "
                             f"{list(g.strides)} (sizes {sizes}); use fewer layers, smaller strides or more padding")
        if any(p >= g.kernel for p in g.paddings):
            raise ValueError(f"conv.padding must be smaller than conv.kernel ({g.kernel}), got {list(g.paddings)}")
        flat = [s.multiplier * m * (h * w) for m, (h, w) in zip(t.widths, sizes)]
        if cfg.measure.theory_every != "none" and max(flat) > THEORY_MAX_UNITS:
            raise ValueError(f"measure.theory_every with arch='conv' unrolls each conv layer into a dense matrix, and "
                             f"the student's flattened widths (channels x positions) {flat} exceed {THEORY_MAX_UNITS} "
                             "per layer; use fewer channels, smaller images or strides, or measure.theory_every='none'")

    def teacher(self, cfg, inputs):
        from .conv import make_conv_teacher
        from .pretrain import pretrained

        return pretrained(cfg, inputs, make_conv_teacher)  # teacher.train trains it

    def students(self, cfg, teacher, d, device, dtype):
        from .conv import ConvEnsemble, geometry

        widths = [cfg.student.multiplier * m for m in cfg.teacher.widths]
        return ConvEnsemble.create(widths, teacher.outputs, geometry(cfg), cfg.student, device, dtype)

    def ensemble(self, cfg, params, batchnorm):
        from .conv import ConvEnsemble, geometry

        return ConvEnsemble(params, geometry(cfg), batchnorm)

    def fresh_params(self, cfg, widths, seeds):
        from .conv import geometry, init_conv_member

        return _stack([init_conv_member(widths, cfg.teacher.outputs, geometry(cfg), s, cfg.student) for s in seeds])

    def fanout(self, params):
        from .conv import fanout_norms

        return [f.double() for f in fanout_norms(params[0::2])]

    def prune(self, state, kept, batchnorm):
        from .pruning import prune_channels

        return prune_channels(state, kept, batchnorm)

    def positions(self, cfg):
        from .conv import geometry

        return geometry(cfg).positions()

    def ensemble_positions(self, ens):
        return ens.geom.positions()

    def param_count(self, cfg, d):
        import math

        from .conv import geometry, layer_shapes

        widths = [cfg.student.multiplier * w for w in cfg.teacher.widths]
        return sum(math.prod(shape) + shape[0] for shape in layer_shapes(widths, cfg.teacher.outputs, geometry(cfg)))


ARCHITECTURES: dict[str, Architecture] = {"mlp": Mlp(), "conv": Conv()}
