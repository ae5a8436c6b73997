"""Local image data sets (MNIST, Fashion-MNIST, CIFAR-10), dataset labels and the trained teacher.

Every file here is generated in ``tmp_path`` in the distributed formats (a few dozen images):
IDX written byte by byte with ``struct``, CIFAR-10 batches pickled as the python version
holds them. Loading is checked against those arrays and a hand-written IDX reader; the
trained teacher against a plain ``nn.Module`` trained with ``torch.optim.SGD``; pruning
against the unpruned teacher with the removed nodes switched off.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_user_error, cli_sets, idx_bytes, invoke, make_cifar, make_idx_set, tiny
from teacherstudent import datasets, pretrain
from teacherstudent.config import TeacherTrainConfig
from teacherstudent.datasets import IDX_FILES, DatasetError
from teacherstudent.errors import UserError
from teacherstudent.inputs import make_inputs
from teacherstudent.seeds import Stream, generator

# ---- files in the distributed formats (the writers: conftest.make_idx_set, make_cifar) --------


def hand_read_idx(path: Path) -> np.ndarray:
    """A plain IDX reader (struct, gzip by name) to hold the library's reader against."""
    data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    zero, kind, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and kind == 8
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.array(list(data[4 + 4 * ndim:]), dtype=np.uint8).reshape(dims)


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    make_idx_set(tmp_path / "mnist")
    return tmp_path / "mnist"


@pytest.fixture
def cifar_dir(tmp_path) -> Path:
    make_cifar(tmp_path / "cifar-10-batches-py")
    return tmp_path  # the parent of cifar-10-batches-py, as the tarball unpacks


# ---- reading ------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_as_the_hand_reader_reads_them(tmp_path, gz):
    written = make_idx_set(tmp_path, gz=gz)
    a = datasets.read("mnist", tmp_path)
    names = [n + (".gz" if gz else "") for n in IDX_FILES]
    hand = [hand_read_idx(tmp_path / n) for n in names]
    assert np.array_equal(hand[0], written[IDX_FILES[0]])  # the hand reader reads what was written
    assert a.train_x.shape == (40, 1, 28, 28) and a.test_x.shape == (20, 1, 28, 28)
    assert np.array_equal(a.train_x[:, 0], hand[0]) and np.array_equal(a.test_x[:, 0], hand[2])
    assert np.array_equal(a.train_y, hand[1]) and np.array_equal(a.test_y, hand[3]) and a.train_y.dtype == np.int64


def test_torchvision_layout_and_fashion_mnist(tmp_path):
    written = make_idx_set(tmp_path / "FashionMNIST" / "raw", seed=3)
    a = datasets.read("fashion_mnist", tmp_path)
    assert np.array_equal(a.test_x[:, 0], written[IDX_FILES[2]])


def test_cifar_batches_load_in_order_from_the_folder_or_its_parent(tmp_path):
    written = make_cifar(tmp_path / "cifar-10-batches-py")
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):
        a = datasets.read("cifar10", path)
        train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
        assert a.train_x.shape == (40, 3, 32, 32) and a.test_x.shape == (12, 3, 32, 32)
        # data rows are R (32x32 row-major), then G, then B
        assert a.train_x[9, 1, 2, 3] == train[9, 1024 + 2 * 32 + 3]
        assert np.array_equal(a.train_x.reshape(40, -1), train)
        assert a.train_y.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
        assert a.test_y.tolist() == written["test_batch"][1]


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    make_cifar(tmp_path)
    Exploit.target = tmp_path / "pwned"
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": Exploit(), "labels": []}, protocol=2))
    with pytest.raises(DatasetError, match=r"test_batch: not a CIFAR-10 python batch \(UnpicklingError: refused to load "
                       r"(posix|os|nt)\.system"):
        datasets.read("cifar10", tmp_path)
    assert not (tmp_path / "pwned").exists()


def corrupt_idx(folder: Path, what: str) -> None:
    p = folder / (IDX_FILES[0] + ".gz")
    data = gzip.decompress(p.read_bytes())
    if what == "truncated":
        p.write_bytes(gzip.compress(data[:-5]))
    elif what == "magic":
        p.write_bytes(b"\x01" + data[1:])  # not gzip, not IDX
    elif what == "size":
        p.write_bytes(idx_bytes(np.zeros((4, 20, 20), np.uint8)))
    elif what == "labels":
        (folder / (IDX_FILES[1] + ".gz")).write_bytes(idx_bytes(np.zeros(7, np.uint8)))
    elif what == "classes":
        (folder / (IDX_FILES[3] + ".gz")).write_bytes(idx_bytes(np.full(20, 12, np.uint8)))
    elif what == "missing":
        (folder / (IDX_FILES[2] + ".gz")).unlink()


@pytest.mark.parametrize("what, message", [
    ("missing", "missing t10k-images-idx3-ubyte;"),
    ("truncated", "train-images-idx3-ubyte.gz is not a readable IDX file (IDX header says 40x28x28 = 31360 bytes of "
                  "values but the file holds 31355)"),
    ("magic", "train-images-idx3-ubyte.gz is not a readable IDX file (not an IDX file (it does not start with two zero "
               "bytes))"),
    ("size", "train-images-idx3-ubyte holds images of shape [20, 20], not 28x28"),
    ("labels", "train-labels-idx1-ubyte holds [7] labels for 40 images"),
    ("classes", "the test labels run from 12 to 12, not 0..9"),
])
def test_malformed_idx_folders_are_one_line_naming_the_files(tmp_path, what, message):
    make_idx_set(tmp_path)
    corrupt_idx(tmp_path, what)
    with pytest.raises(DatasetError) as err:
        datasets.read("mnist", tmp_path)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert "mnist needs train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]" in text and "yann.lecun.com" in text


@pytest.mark.parametrize("batch, message", [
    (b"garbage", "data_batch_2: not a CIFAR-10 python batch"),
    (pickle.dumps([1, 2], protocol=2), "data_batch_2: it holds a list, not a batch's dict"),
    (pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, protocol=2),
     "data_batch_2: its 'data' is uint8 [2, 100], not uint8 [n, 3072]"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, protocol=2),
     "data_batch_2: its 'labels' are not 2 integers"),
])
def test_malformed_cifar_batches(tmp_path, batch, message):
    make_cifar(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(batch)
    with pytest.raises(DatasetError, match="cifar10 needs data_batch_1, data_batch_2") as err:
        datasets.read("cifar10", tmp_path)
    assert message in str(err.value)


def test_missing_folder_or_files(tmp_path):
    with pytest.raises(DatasetError, match=r"inputs.path='.*nowhere': no such folder; cifar10 needs data_batch_1"):
        datasets.check_files("cifar10", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="missing data_batch_1, data_batch_2, data_batch_3, data_batch_4, "
                       "data_batch_5, test_batch; .*cs.toronto.edu"):
        datasets.read("cifar10", tmp_path)


def test_a_rewritten_file_is_read_again(tmp_path):
    make_idx_set(tmp_path, seed=0)
    first = datasets.read("mnist", tmp_path)
    assert datasets.read("mnist", tmp_path) is first  # cached while unchanged
    written = make_idx_set(tmp_path, seed=1)
    os.utime(tmp_path / (IDX_FILES[0] + ".gz"), ns=(1, 1))
    assert np.array_equal(datasets.read("mnist", tmp_path).train_x[:, 0], written[IDX_FILES[0]])


# ---- inputs ---------------------------------------------------------------------------------


def test_images_are_standardised_per_channel_on_the_training_split(cifar_dir):
    cfg = tiny("inputs.kind='cifar10'", f"inputs.path='{cifar_dir}'", "inputs.sigma=2.0")
    dist = make_inputs(cfg.inputs, cfg.teacher.d, 0)
    raw = datasets.read("cifar10", cifar_dir)
    x = raw.train_x.astype(np.float64)
    mu, sd = x.mean((0, 2, 3)), x.std((0, 2, 3), ddof=1)
    want = (x - mu[None, :, None, None]) / sd[None, :, None, None] * 2.0
    d = dist.take("train", torch.arange(40))
    assert d.x.dtype == torch.float64 and d.x.shape == (40, 3072)
    assert torch.allclose(d.x, torch.from_numpy(want.reshape(40, -1)), rtol=0, atol=1e-12)
    test = dist.take("eval", torch.arange(12))
    want_test = (raw.test_x.astype(np.float64) - mu[None, :, None, None]) / sd[None, :, None, None] * 2.0
    assert torch.allclose(test.x, torch.from_numpy(want_test.reshape(12, -1)), rtol=0, atol=1e-12)
    assert test.label.tolist() == raw.test_y.tolist()


def test_draws_take_whole_passes_over_their_split_and_keep_the_labels(mnist_dir):
    cfg = tiny("inputs.kind='mnist'", f"inputs.path='{mnist_dir}'")
    dist = make_inputs(cfg.inputs, cfg.teacher.d, 0)
    raw = datasets.read("mnist", mnist_dir)
    d = dist.draw(50, torch.Generator().manual_seed(1), "eval")  # 20 test images: 2.5 passes
    # each drawn image is one of the test images (matched by its label and its standardised pixels)
    std = dist.take("eval", torch.arange(20))
    match = [int(torch.nonzero((std.x == r).all(1))[0]) for r in d.x]
    assert sorted(match[:20]) == list(range(20)) and sorted(match[20:40]) == list(range(20))
    assert [int(raw.test_y[i]) for i in match] == d.label.tolist()


@pytest.mark.parametrize("sets, message", [
    (["inputs.kind='mnist'"], "inputs.kind='mnist' reads local files: set inputs.path to their folder (mnist needs "
                              "train-images-idx3-ubyte[.gz]"),
    (["inputs.path='x'"], "inputs.path is only used by kind=mnist/fashion_mnist/cifar10, not 'gaussian'"),
    (["inputs.labels='dataset'"], "inputs.labels='dataset' learns a data set's own labels; set inputs.kind to one of "
                                  "digits, mnist, fashion_mnist, cifar10 (got 'gaussian')"),
    (["inputs.kind='digits'", "inputs.labels='dataset'", "teacher.outputs=5", "training.loss='ce'"],
     "learns the 10 classes of digits: set teacher.outputs=10"),
    (["inputs.kind='digits'", "inputs.labels='dataset'"], "set training.loss='ce' (got 'mse')"),
    (["teacher.train={epochs=1}"], "teacher.train learns a data set's own labels; set inputs.kind"),
    (["inputs.kind='digits'", "teacher.train={finetune_epochs=1}"],
     "teacher.train.finetune_epochs does nothing unless teacher.train.prune > 0"),
    (["inputs.kind='digits'", "teacher.train={prune=0.5}", "student.lucky_nodes=1"],
     "teacher.train does not work with student.lucky_nodes with teacher.train.prune > 0"),
])
def test_config_errors(sets, message):
    with pytest.raises(UserError) as err:
        tiny(*sets)
    assert message in str(err.value)


def test_missing_files_are_exit_2_one_line_from_the_cli(tmp_path):
    res = invoke("run", *cli_sets("inputs.kind='fashion_mnist'", f"inputs.path='{tmp_path}'"), "--out",
                 tmp_path / "runs", "--device", "cpu")
    assert_user_error(res)
    assert "fashion_mnist needs train-images-idx3-ubyte[.gz]" in res.stderr and "zalandoresearch" in res.stderr


def test_existing_run_ids_do_not_change():
    """The fields added with a None default leave the canonical form, so every run id, as it was."""
    assert "path" not in tiny().canonical().get("inputs", {}) and "train" not in tiny().canonical().get("teacher", {})
    assert tiny("inputs.kind='digits'", "teacher.train={}").run_id != tiny("inputs.kind='digits'").run_id
    assert Stream.TEACHER_TRAIN == 0x7EAC4 and list(Stream)[-1] is Stream.TEACHER_TRAIN


# ---- the trained teacher ----------------------------------------------------------------------


def reference_fit(teacher, dist, tc: TeacherTrainConfig, seed: int) -> list[torch.Tensor]:
    """The generated MLP teacher as ``nn.Linear`` layers trained by ``torch.optim.SGD`` (float64)."""
    layers: list[torch.nn.Module] = []
    for w, b in zip(teacher.weights, teacher.biases):
        lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        layers += [lin, torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(net.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    n = len(dist.pools["train"])
    for epoch in range(tc.epochs):
        order = torch.randperm(n, generator=generator(seed, Stream.TEACHER_TRAIN, tc.seed, epoch))
        for i in range(0, n, tc.batch_size):
            d = dist.take("train", order[i:i + tc.batch_size])
            opt.zero_grad()
            F.cross_entropy(net(d.x), d.label).backward()
            opt.step()
    return [p.detach() for p in net.parameters()]


def test_teacher_training_matches_a_plain_module_trained_with_torch_sgd(mnist_dir):
    cfg = tiny("inputs.kind='mnist'", f"inputs.path='{mnist_dir}'", "inputs.sigma=1.0", "teacher.reference_samples=200",
               "inputs.labels='dataset'", "training.loss='ce'",
               "teacher.train={epochs=3, batch_size=16, lr=0.05, weight_decay=0.001, dtype='float64', seed=5}")
    dist = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
    from teacherstudent.teacher import make_teacher

    generated = make_teacher(cfg.teacher, dist)
    got = pretrain.fit(generated, dist, cfg.teacher.train, range(3), cfg.teacher.seed)
    want = reference_fit(generated, dist, cfg.teacher.train, cfg.teacher.seed)
    mine = [t for wb in zip(got.weights, got.biases) for t in wb]
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(mine, want))
    assert any(not torch.equal(a, b) for a, b in zip(mine, [t for wb in zip(generated.weights, generated.biases) for t in wb]))


def masked_output(teacher, x, kept):
    """The unpruned teacher's outputs with every node outside ``kept`` switched off (MLP or conv)."""
    conv = teacher.weights[0].dim() == 4
    h = x.reshape(-1, *teacher.geom.image) if conv else x
    for l, (w, b) in enumerate(zip(teacher.weights[:-1], teacher.biases[:-1])):
        if conv:
            h = torch.relu(F.conv2d(h, w, b, stride=teacher.geom.strides[l], padding=teacher.geom.paddings[l]))
        else:
            h = torch.relu(h @ w.T + b)
        mask = torch.zeros(w.shape[0], dtype=h.dtype)
        mask[kept[l]] = 1
        h = h * (mask[:, None, None] if conv else mask)
    return h.flatten(1) @ teacher.weights[-1].T + teacher.biases[-1]


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_pruning_keeps_the_largest_fanout_nodes_and_equals_switching_the_others_off(cifar_dir, arch):
    sets = ["teacher.widths=[4, 6]", "teacher.reference_samples=200", "inputs.kind='cifar10'", f"inputs.path='{cifar_dir}'",
            "inputs.sigma=1.0"] + (["arch='conv'", "conv.stride=2"] if arch == "conv" else [])
    cfg = tiny(*sets)
    from teacherstudent.architectures import ARCHITECTURES

    dist = make_inputs(cfg.inputs, cfg.teacher.d, 0)
    t = ARCHITECTURES[arch].teacher(cfg, dist)
    pruned, kept = pretrain.prune(t, 0.5)
    assert [len(k) for k in kept] == [2, 3] and list(pruned.widths) == [2, 3]
    for l, k in enumerate(kept):  # fan-out norms by hand: what the next layer reads from each node
        nxt = t.weights[l + 1]
        m = t.weights[l].shape[0]
        norms = [float(nxt.reshape(nxt.shape[0], m, -1)[:, j].norm()) for j in range(m)]
        assert sorted(k) == sorted(np.argsort(norms, kind="stable")[::-1][:len(k)].tolist())
    x = dist.take("eval", torch.arange(12)).x
    assert torch.allclose(pruned(x), masked_output(t, x, kept), rtol=0, atol=1e-10)


def test_a_tiny_conv_run_with_a_trained_pruned_teacher_end_to_end(cifar_dir, tmp_path):
    from teacherstudent.simulate import RunOptions, run
    from teacherstudent.store import load_torch

    cfg = tiny("arch='conv'", "conv.stride=2", "teacher.widths=[4, 6]", "teacher.reference_samples=200",
               "inputs.kind='cifar10'", f"inputs.path='{cifar_dir}'", "inputs.sigma=1.0", "inputs.train_samples=64",
               "inputs.eval_samples=32", "student.multiplier=2", "training.epochs=1",
               "teacher.train={epochs=2, batch_size=8, prune=0.5, finetune_epochs=1}")
    folder = run(cfg, RunOptions(tmp_path / "runs", "cpu"))
    report = json.loads((folder / "teacher.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["generated", "trained", "pruned", "finetuned"]
    assert report["widths"] == [2, 3] and report["test_accuracy"] == report["stages"][-1]["test_accuracy"]
    assert all(0 <= s["train_accuracy"] <= 1 and s["train_accuracy"] * 40 == round(s["train_accuracy"] * 40)
               for s in report["stages"])
    state = load_torch(folder / "teacher.pt")
    assert [w.shape[0] for w in state["weights"][:-1]] == [2, 3] and state["kept"] == report["kept"]
    nodes = __import__("pandas").read_parquet(folder / "teacher_nodes.parquet")
    assert (nodes.groupby("layer").teacher_node.max() + 1).tolist() == [2, 3]  # measured against the pruned teacher
    # the same config trains the same teacher (a fresh process: the cache emptied)
    pretrain._CACHE.clear()
    again = pretrain.record(cfg)[0]
    assert all(torch.equal(a, b) for a, b in zip(again["weights"], state["weights"]))


def test_dataset_labels_train_students_on_the_true_classes(mnist_dir, tmp_path):
    """labels='dataset': targets are the images' own classes, so the eval accuracy is against them."""
    from teacherstudent.build import build
    from teacherstudent.simulate import RunOptions, run

    cfg = tiny("inputs.kind='mnist'", f"inputs.path='{mnist_dir}'", "inputs.sigma=1.0", "inputs.labels='dataset'",
               "training.loss='ce'", "teacher.reference_samples=200", "inputs.train_samples=40", "inputs.eval_samples=20")
    p = build(cfg, torch.device("cpu"))
    raw = datasets.read("mnist", mnist_dir)
    x_eval = p.data.x_eval.double()
    std = make_inputs(cfg.inputs, cfg.teacher.d, 0).take("eval", torch.arange(20)).x
    idx = [int(torch.nonzero((std.float() == r.float()).all(1))[0]) for r in x_eval]
    assert p.data.y_eval.tolist() == [int(raw.test_y[i]) for i in idx]
    folder = run(cfg, RunOptions(tmp_path / "runs", "cpu"))
    m = __import__("pandas").read_parquet(folder / "metrics.parquet")
    assert set(m[m.metric == "accuracy"].split) == {"eval"}


def test_the_cifar10_teacher_experiment_runs_on_generated_files(cifar_dir, tmp_path):
    from teacherstudent.experiments import StudyOptions, run_named, run_study

    res = run_study("cifar10_teacher", StudyOptions(tmp_path / "runs", "cpu", workers=1, quick=True),
                    [f"inputs.path={cifar_dir}", "inputs.train_samples=64", "inputs.eval_samples=32",
                     "teacher.reference_samples=200", "teacher.train.batch_size=8"])
    assert not res.failed, res.failed
    s = res.tables["summary"]
    assert set(s.arm) == {"trained", "generated"} and len(s) == 4
    assert s[s.arm == "trained"].teacher_width.tolist() == [2, 4] and s[s.arm == "generated"].teacher_width.tolist() == [4, 8]
    assert res.tables["teacher"].stage.tolist() == ["generated", "trained", "pruned", "finetuned"]
    with pytest.raises(UserError, match="missing data_batch_1"):
        run_named("cifar10_teacher", StudyOptions(tmp_path / "runs", "cpu"), [f"inputs.path={tmp_path / 'runs'}"])
    with pytest.raises(UserError, match="inputs.kind='cifar10' reads local files: set inputs.path"):
        run_named("cifar10_teacher", StudyOptions(tmp_path / "runs", "cpu"))
