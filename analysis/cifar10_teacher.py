"""A CIFAR-10-trained, pruned convolutional teacher versus a generated one (2020 paper's CIFAR-10 setting).

Arms (same CIFAR-10 images from ``--set inputs.path=FOLDER``, or another labelled kind such as
``--set inputs.kind=digits``; same students ``multiplier * teacher.widths``
channels, same training):

- ``trained``: the teacher is first trained on CIFAR-10's labels (``teacher.train``: SGD on
  cross-entropy), half of every layer's channels are pruned by fan-out norm, it is fine-tuned,
  then frozen (teacherstudent/pretrain.py); the students learn its outputs;
- ``generated``: the generated teacher it started from (grid rows, tuned biases), untrained.

The question: do students specialise to (recover the channels of) a teacher that computes
something about real images as they do to a generated one? A trained, pruned teacher is
narrower than the students' ``teacher.widths`` and its channels are far from the sparse,
rarely co-active nodes the theory assumes.

Tables: ``summary`` (arm x layer at the end: the measured teacher's channels, mean best
correlation over members and its spread, recovered fraction, final eval loss, and the teacher's
own CIFAR-10 test accuracy), ``teacher`` (the trained teacher's train/test accuracy after each
stage: generated, trained, pruned, fine-tuned; from its ``teacher.json``) and ``curves`` (arm x
epoch x layer).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.datasets import check_files
from teacherstudent.summary import final_losses, layer_summary, recovery_curves


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    if base.inputs.path is not None:  # missing files: one clear line before anything trains
        check_files(base.inputs.kind, base.inputs.path)
    return {"trained": base.replace(name=f"{base.name}.trained"),
            "generated": base.replace(name=f"{base.name}.generated", teacher={"train": None})}


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    report = json.loads((runs["trained"] / "teacher.json").read_text())
    stages = pd.DataFrame(report["stages"])
    accuracy = {"trained": report["test_accuracy"], "generated": float(stages.test_accuracy.iloc[0])}
    rows, curves = [], []
    for arm, folder in runs.items():
        s = layer_summary(folder)
        loss = final_losses(folder).set_index("split")["mean"]
        rows.append(s[["layer", "teacher_width", "best_corr_mean", "best_corr_mean_std", "recovered_frac"]].assign(
            eval_loss=float(loss["eval"]), teacher_test_accuracy=accuracy[arm]).assign(arm=arm))
        curves.append(recovery_curves(folder, ())["curves"].assign(arm=arm))
    first = lambda df: df[["arm", *[c for c in df.columns if c != "arm"]]]  # noqa: E731
    teacher = stages.assign(widths=stages.widths.map(lambda w: "x".join(map(str, w))))
    return {"summary": first(pd.concat(rows, ignore_index=True)), "teacher": teacher,
            "curves": first(pd.concat(curves, ignore_index=True))}
