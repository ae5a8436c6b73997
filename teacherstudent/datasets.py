"""Readers of image data sets kept in a local folder: MNIST, Fashion-MNIST and CIFAR-10.

Nothing is ever downloaded. ``read(kind, folder)`` returns the data set's official training
and test splits as ``uint8`` images ``[N, C, H, W]`` and ``int64`` labels ``[N]``, read from
the files exactly as their authors distribute them:

============== ==================================================== =========================
kind           files (in ``inputs.path``, or where noted)           images
============== ==================================================== =========================
mnist          train-images-idx3-ubyte, train-labels-idx1-ubyte,    60,000 + 10,000, 1x28x28
               t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte
               (each may be gzipped, ``.gz``; also found in
               ``MNIST/raw/`` below the folder, torchvision's layout)
fashion_mnist  the same four names (``FashionMNIST/raw/``)          60,000 + 10,000, 1x28x28
cifar10        data_batch_1 .. data_batch_5, test_batch             50,000 + 10,000, 3x32x32
               (the folder ``cifar-10-batches-py`` or its parent)
============== ==================================================== =========================

IDX (LeCun's format): two zero bytes, a type byte (0x08: unsigned bytes), the number of
dimensions, each dimension as a big-endian 32-bit integer, then the values in C order.
CIFAR-10's "python version": each batch a pickled dict with ``data`` (``uint8 [10000,
3072]``, rows ``R..G..B`` of 32x32 each, row-major) and ``labels`` (10,000 ints 0..9). A
pickle can run any code it names, so batches are read with an unpickler that only builds
the dict, strings, lists, ints and the numpy array the format needs (``SafeUnpickler``).

Every problem with a folder (missing, a file absent, truncated, of another format) is one
``DatasetError`` line naming the files expected there and where to get them.
"""

from __future__ import annotations

import functools
import gzip
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

SOURCES = {
    "mnist": "https://yann.lecun.com/exdb/mnist/ (or torchvision.datasets.MNIST(root, download=True), "
             "which puts them in root/MNIST/raw)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist (or torchvision.datasets.FashionMNIST(root, "
                     "download=True), which puts them in root/FashionMNIST/raw)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html: the 'CIFAR-10 python version' "
               "(cifar-10-python.tar.gz, unpacked with tar xzf)",
}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_SUBFOLDER = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw"}
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_SUBFOLDER = "cifar-10-batches-py"
SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
CLASSES = 10


class DatasetError(UserError):
    """A data set folder that cannot be read (one line: what is wrong, what is expected, where to get it)."""


@dataclass(frozen=True)
class Arrays:
    """One data set's official splits: images ``uint8 [N, C, H, W]``, labels ``int64 [N]`` (0..9)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def expected(kind: str) -> str:
    """The files ``kind`` reads, and where to get them (the tail of every error)."""
    if kind == "cifar10":
        files = ", ".join(CIFAR_FILES) + f" (in the folder {CIFAR_SUBFOLDER} or its parent)"
    else:
        files = ", ".join(f"{f}[.gz]" for f in IDX_FILES) + f" (in the folder or its {IDX_SUBFOLDER[kind]})"
    return f"{kind} needs {files}; get them from {SOURCES[kind]}"


def _fail(kind: str, folder: Path, what: str) -> DatasetError:
    return DatasetError(f"inputs.path={str(folder)!r}: {what}; {expected(kind)}")


# ---- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------

def parse_idx(data: bytes) -> np.ndarray:
    """An IDX file's array (unsigned bytes only; ``ValueError`` if the bytes are not one)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("not an IDX file (it does not start with two zero bytes)")
    if data[2] != 0x08:
        raise ValueError(f"IDX type byte 0x{data[2]:02x} is not 0x08 (unsigned bytes)")
    ndim = data[3]
    head = 4 + 4 * ndim
    if ndim == 0 or len(data) < head:
        raise ValueError("truncated IDX header")
    dims = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(dims))
    if len(data) != head + size:
        raise ValueError(f"IDX header says {'x'.join(map(str, dims))} = {size} bytes of values but the file holds "
                         f"{len(data) - head}")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw  # gzipped or not, whatever the name says


def _idx_folder(kind: str, folder: Path) -> Path:
    for cand in (folder, folder / IDX_SUBFOLDER[kind]):
        if all((cand / f).is_file() or (cand / f"{f}.gz").is_file() for f in IDX_FILES):
            return cand
    missing = [f for f in IDX_FILES if not (folder / f).is_file() and not (folder / f"{f}.gz").is_file()]
    raise _fail(kind, folder, f"missing {', '.join(missing)}")


def read_idx_set(kind: str, folder: Path) -> Arrays:
    where = _idx_folder(kind, folder)
    arrays = []
    for name in IDX_FILES:
        path = where / name if (where / name).is_file() else where / f"{name}.gz"
        try:
            arrays.append(parse_idx(_read_bytes(path)))
        except (ValueError, OSError, EOFError, gzip.BadGzipFile) as err:
            raise _fail(kind, folder, f"{path.name} is not a readable IDX file ({err})") from None
    (tx, ty, vx, vy), (c, h, w) = arrays, SHAPES[kind]
    for name, x, y in ((IDX_FILES[0], tx, ty), (IDX_FILES[2], vx, vy)):
        if x.ndim != 3 or x.shape[1:] != (h, w):
            raise _fail(kind, folder, f"{name} holds images of shape {list(x.shape[1:])}, not {h}x{w}")
    for name, x, y in ((IDX_FILES[1], tx, ty), (IDX_FILES[3], vx, vy)):
        if y.ndim != 1 or len(y) != len(x):
            raise _fail(kind, folder, f"{name} holds {list(y.shape)} labels for {len(x)} images")
    return Arrays(tx.reshape(-1, c, h, w), ty.astype(np.int64), vx.reshape(-1, c, h, w), vy.astype(np.int64))


# ---- CIFAR-10 (pickled python batches) ----------------------------------------------

class SafeUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR-10 batch holds: dicts, lists, strings, numbers and numpy arrays.

    Any other global a pickle asks for (``os.system``, ``builtins.eval``, ...) is refused with
    ``pickle.UnpicklingError`` before anything is called.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol 2 writes bytes from Python 3 (codecs.encode(text, 'latin1'))
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} (a CIFAR-10 batch never needs it)")
        return super().find_class(module, name)


def parse_cifar_batch(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [n, 3, 32, 32]`` and labels ``int64 [n]`` of one pickled batch (``ValueError`` if malformed)."""
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="latin1").load()  # Python 2 pickles: str -> latin1 text
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"not a CIFAR-10 python batch ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"it holds a {type(obj).__name__}, not a batch's dict")
    get = lambda key: obj.get(key, obj.get(key.encode()))  # noqa: E731 (keys are text, or bytes if re-pickled)
    x, y = get("data"), get("labels")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"its 'data' is {got}, not uint8 [n, 3072]")
    if not isinstance(y, (list, tuple)) or len(y) != len(x) or not all(isinstance(v, int) for v in y):
        raise ValueError(f"its 'labels' are not {len(x)} integers")
    return x.reshape(-1, 3, 32, 32), np.asarray(y, dtype=np.int64)


def _cifar_folder(kind: str, folder: Path) -> Path:
    where = folder / CIFAR_SUBFOLDER if (folder / CIFAR_SUBFOLDER).is_dir() else folder
    missing = [f for f in CIFAR_FILES if not (where / f).is_file()]
    if missing:
        raise _fail(kind, folder, f"missing {', '.join(missing)}")
    return where


def read_cifar10(kind: str, folder: Path) -> Arrays:
    where = _cifar_folder(kind, folder)
    parts = []
    for name in CIFAR_FILES:
        try:
            parts.append(parse_cifar_batch((where / name).read_bytes()))
        except (ValueError, OSError) as err:
            raise _fail(kind, folder, f"{name}: {err}") from None
    train = parts[:-1]
    return Arrays(np.concatenate([p[0] for p in train]), np.concatenate([p[1] for p in train]), *parts[-1])


READERS = {"mnist": read_idx_set, "fashion_mnist": read_idx_set, "cifar10": read_cifar10}


@functools.lru_cache(maxsize=2)
def _read_cached(kind: str, folder: str, stamp: tuple) -> Arrays:
    arrays = READERS[kind](kind, Path(folder))
    for name, y in (("training", arrays.train_y), ("test", arrays.test_y)):
        if len(y) == 0:
            raise _fail(kind, Path(folder), f"the {name} split holds no images")
        if y.min() < 0 or y.max() >= CLASSES:
            raise _fail(kind, Path(folder), f"the {name} labels run from {y.min()} to {y.max()}, not 0..{CLASSES - 1}")
    for a in (arrays.train_x, arrays.train_y, arrays.test_x, arrays.test_y):
        a.setflags(write=False)
    return arrays


def check_files(kind: str, path: str | Path) -> None:
    """Raise ``DatasetError`` unless the folder ``path`` holds every file ``kind`` reads (their content is not read)."""
    folder = _folder(kind, path)
    (_cifar_folder if kind == "cifar10" else _idx_folder)(kind, folder)


def _folder(kind: str, path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise _fail(kind, folder, "no such folder" if not folder.exists() else "not a folder")
    return folder


def read(kind: str, path: str | Path) -> Arrays:
    """The official splits of ``kind`` from the folder ``path`` (read once per process while the files are unchanged)."""
    folder = _folder(kind, path)
    return _read_cached(kind, str(folder.resolve()), _stamp(kind, folder))


def _stamp(kind: str, folder: Path) -> tuple:
    """Name, size and modification time of every file ``kind`` may read there (a changed file is read again)."""
    if kind == "cifar10":
        cands = [d / f for d in (folder, folder / CIFAR_SUBFOLDER) for f in CIFAR_FILES]
    else:
        cands = [d / f"{f}{gz}" for d in (folder, folder / IDX_SUBFOLDER[kind]) for f in IDX_FILES for gz in ("", ".gz")]
    return tuple((str(p), st.st_size, st.st_mtime_ns) for p in cands if p.is_file() for st in [p.stat()])
