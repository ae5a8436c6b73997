"""The trained-teacher setting (``teacher.train``): the teacher learns the data set first, then is frozen.

The 2020 paper ("Student Specialization", §6) also runs students against a teacher that was
trained on CIFAR-10 (and pruned) instead of a generated one. Here, with ``teacher.train`` set:

1. the teacher of ``teacher`` / ``[conv]`` is generated as usual (teacher.py, conv.py): that is
   the starting point of its training (rows from the grid, tuned biases, standardised readout);
2. it is trained for ``epochs`` passes over the data set's training split (``inputs.kind`` a
   labelled data set: digits, mnist, fashion_mnist, cifar10) by SGD with momentum on the
   cross-entropy of its outputs against the true classes, minibatches of ``batch_size`` in an
   order drawn each epoch from stream ``TEACHER_TRAIN`` of ``teacher.seed`` (index
   ``train.seed``, epoch), in ``train.dtype``, on the CPU (so the teacher is the same on every
   device, like a generated one);
3. with ``prune`` > 0, every hidden layer keeps the ``m_l - round(prune * m_l)`` nodes (conv:
   channels) of largest fan-out norm ``||W_{l+1}[:, j]||`` (one shot, all layers from the
   trained weights; the 2020 code ranks by mean |fan-out| instead), the others are removed, and
   the narrower teacher is trained ``finetune_epochs`` more passes (epochs numbered on from
   ``epochs``);
4. the result is frozen as the teacher, exactly as trained (not re-standardised: that would
   change its predictions). The students keep the widths ``multiplier * teacher.widths`` of the
   config, so a pruned teacher is measured with fewer nodes than ``teacher.widths`` says.

Its accuracy on the training and test splits after each stage goes into the run folder's
``teacher.json`` (``teacher.pt``: its weights and the nodes kept). Training is a pure function
of the config (``trained_teacher`` keeps the last two per process, so probes and a study's
arms do not train the same teacher twice).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F

from .seeds import Stream, generator

if TYPE_CHECKING:
    from .config import ExperimentConfig, TeacherTrainConfig
    from .inputs import Finite

EVAL_CHUNK = 2048  # images per forward when measuring accuracy
_CACHE: dict[str, TrainedTeacher] = {}
_CACHE_SIZE = 2


@dataclass(frozen=True)
class TrainedTeacher:
    """The frozen teacher (float64, CPU), the generated teacher's nodes it kept per hidden layer, and
    ``stages``: ``{stage, widths, train_accuracy, test_accuracy}`` after generation, training, pruning, fine-tuning."""

    teacher: Any
    kept: list[list[int]]
    stages: list[dict[str, Any]]


def check_dataset_setting(cfg: ExperimentConfig) -> None:
    """Config validation of ``inputs.labels='dataset'`` and ``teacher.train`` (``ValueError`` with the fix)."""
    from .inputs import check_classes

    if cfg.inputs.labels == "dataset":
        check_classes(cfg.inputs, cfg.teacher.outputs, cfg.training.loss, "inputs.labels='dataset'")
    tr = cfg.teacher.train
    if tr is None:
        return
    check_classes(cfg.inputs, cfg.teacher.outputs, None, "teacher.train")
    refused = [name for name, on in (
        ("teacher.seeds", cfg.teacher.seeds is not None),
        ("inputs.labels='wide_teacher' (the wide teacher would be untrained)", cfg.inputs.labels == "wide_teacher"),
        ("student.lucky_nodes with teacher.train.prune > 0 (the pruned teacher is narrower)",
         tr.prune > 0 and cfg.student.lucky_nodes != 0),
    ) if on]
    if refused:
        raise ValueError(f"teacher.train does not work with {', '.join(refused)}; drop "
                         f"{'it' if len(refused) == 1 else 'them'} or teacher.train")


def _key(cfg: ExperimentConfig) -> str:
    """What the trained teacher depends on: the teacher, inputs, arch and conv sections (canonical form)."""
    canon = cfg.canonical()
    return json.dumps({k: canon.get(k) for k in ("teacher", "inputs", "arch", "conv")}, sort_keys=True)


def pretrained(cfg: ExperimentConfig, inputs: Finite, make: Callable[[ExperimentConfig, Any], Any]) -> Any:
    """``make(cfg, inputs)`` (the generated teacher), trained first when ``teacher.train`` is set."""
    if cfg.teacher.train is None:
        return make(cfg, inputs)
    key = _key(cfg)
    if key not in _CACHE:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = train_teacher(make(cfg, inputs), inputs, cfg.teacher.train, cfg.teacher.seed)
    return _CACHE[key].teacher


def trained_teacher(cfg: ExperimentConfig) -> TrainedTeacher:
    """The trained teacher of ``cfg`` with its record (trained now unless this process already did)."""
    key = _key(cfg)
    if key not in _CACHE:
        from .architectures import ARCHITECTURES
        from .inputs import make_inputs

        ARCHITECTURES[cfg.arch].teacher(cfg, make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed))
    return _CACHE[key]


def train_teacher(teacher: Any, inputs: Finite, tc: TeacherTrainConfig, seed: int) -> TrainedTeacher:
    """Steps 2-4 of the module docstring on the generated ``teacher`` (a ``Teacher`` or ``ConvTeacher``)."""
    stages = [_stage("generated", teacher, inputs)]
    teacher = fit(teacher, inputs, tc, range(tc.epochs), seed)
    stages.append(_stage("trained", teacher, inputs))
    kept = [list(range(m)) for m in teacher.widths]
    if tc.prune > 0:
        teacher, kept = prune(teacher, tc.prune)
        stages.append(_stage("pruned", teacher, inputs))
        if tc.finetune_epochs:
            teacher = fit(teacher, inputs, tc, range(tc.epochs, tc.epochs + tc.finetune_epochs), seed)
            stages.append(_stage("finetuned", teacher, inputs))
    return TrainedTeacher(teacher, kept, stages)


def fit(teacher: Any, inputs: Finite, tc: TeacherTrainConfig, epochs: range, seed: int) -> Any:
    """``teacher`` after SGD (momentum, weight decay) on the cross-entropy of its outputs against the
    training split's classes, one pass per epoch in ``epochs``; returned in float64."""
    dtype = getattr(torch, tc.dtype)
    L = len(teacher.weights)
    params = [p.detach().to(dtype).clone().requires_grad_(True) for p in (*teacher.weights, *teacher.biases)]
    net = dataclasses.replace(teacher, weights=tuple(params[:L]), biases=tuple(params[L:]))
    opt = torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    n = len(inputs.pools["train"])
    for epoch in epochs:
        order = torch.randperm(n, generator=generator(seed, Stream.TEACHER_TRAIN, tc.seed, epoch))
        for start in range(0, n, tc.batch_size):
            batch = inputs.take("train", order[start:start + tc.batch_size])
            loss = F.cross_entropy(net(batch.x.to(dtype)), batch.label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return dataclasses.replace(teacher, weights=tuple(p.detach().double() for p in params[:L]),
                               biases=tuple(p.detach().double() for p in params[L:]))


def prune(teacher: Any, frac: float) -> tuple[Any, list[list[int]]]:
    """Keep ``m_l - round(frac * m_l)`` (at least 1) nodes of every hidden layer: those of largest fan-out
    norm (ties: the lower index), in index order; the next layer loses the matching inputs."""
    fan = [f[0] for f in teacher.fanout_norms(1)]  # [m_l] per hidden layer
    kept = []
    for f in fan:
        m = len(f)
        keep = max(1, m - round(frac * m))
        order = torch.sort(f, descending=True, stable=True).indices[:keep]
        kept.append(sorted(order.tolist()))
    W, b = list(teacher.weights), list(teacher.biases)
    for l, k in enumerate(kept):
        idx = torch.tensor(k)
        m = W[l].shape[0]
        W[l], b[l] = W[l][idx], b[l][idx]
        nxt = W[l + 1]
        if nxt.dim() == 2 and nxt.shape[1] != m:  # a conv readout: columns channel-major, P positions each
            W[l + 1] = nxt.reshape(nxt.shape[0], m, -1)[:, idx].reshape(nxt.shape[0], -1)
        else:
            W[l + 1] = nxt[:, idx]
    return dataclasses.replace(teacher, weights=tuple(W), biases=tuple(b)), kept


@torch.no_grad()
def accuracy(teacher: Any, inputs: Finite, split: str) -> float:
    """Fraction of the ``split`` pool whose class is the argmax of the teacher's outputs (float64)."""
    n = len(inputs.pools[split])
    right = 0
    for start in range(0, n, EVAL_CHUNK):
        d = inputs.take(split, torch.arange(start, min(start + EVAL_CHUNK, n)))
        right += int((teacher(d.x).argmax(1) == d.label).sum())
    return right / n


def _stage(name: str, teacher: Any, inputs: Finite) -> dict[str, Any]:
    return {"stage": name, "widths": list(teacher.widths), "train_accuracy": accuracy(teacher, inputs, "train"),
            "test_accuracy": accuracy(teacher, inputs, "eval")}


def record(cfg: ExperimentConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(teacher.pt content, teacher.json content)`` of ``cfg``'s trained teacher."""
    tt = trained_teacher(cfg)
    state = {"arch": cfg.arch, "weights": list(tt.teacher.weights), "biases": list(tt.teacher.biases), "kept": tt.kept}
    final = tt.stages[-1]
    report = {"train": cfg.teacher.train.model_dump(mode="json"), "widths": final["widths"],
              "train_accuracy": final["train_accuracy"], "test_accuracy": final["test_accuracy"],
              "kept": tt.kept, "stages": tt.stages}
    return state, report
