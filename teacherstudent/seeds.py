"""Every random stream of a run, derived from ``(seed, stream, *index)`` with all 64 bits.

A run never touches torch's or numpy's global generator: each draw takes a generator made
here from a config seed (``teacher.seed``, ``inputs.seed``, a student seed, a probe seed),
one ``Stream`` name and optional indices (epoch, layer, round). The stream names live in
one enum so two features cannot pick the same number by accident.

Key encoding (``words``): a key whose parts all fit in 32 bits is hashed as those words,
exactly as teacherstudent 0.2 did, so existing runs keep their numbers. Any other key
(a seed of 2**32 or more) is encoded with each part as two 32-bit words plus a tag and
its length: no two distinct keys share a hash input, and such keys never meet a short one.

torch's CPU generator (mt19937) keeps only 32 bits of the seed it is given, so a 64-bit
seed never goes to it directly: seeds below 2**32 are used as they are (as in 0.2), larger
ones through the hash (``seeded``). Two distinct keys then collide with probability 2**-32.
"""

from __future__ import annotations

from enum import IntEnum, unique

import numpy as np
import torch

SEED_BITS = 64
_LONG_KEY_TAG = 0x5EED64


@unique
class Stream(IntEnum):
    """Stream ids. Values are part of every run's numbers: never renumber one."""

    TRAIN = 1  # the fixed training inputs
    EVAL = 2  # the evaluation inputs
    ORDER = 3  # each epoch's batch order
    FRESH = 4  # each epoch's fresh samples (inputs.fresh)
    PERMUTE = 5  # label permutation (inputs.labels='permuted')
    LUCKY = 6  # noise of lucky-by-construction students
    SAMPLE = 7  # minibatch indices drawn with replacement (training.sampling='replacement')
    DROPOUT = 0xD80F  # each member's dropout masks (training.dropout), seeded by its student seed
    WIDE_TEACHER = 0x31DE  # the wide teacher of inputs.labels='wide_teacher'
    STRUCTURE = 0x1B7E5  # what an input kind draws once (cluster centres, manifold basis, digit split)
    PROBE_FRESH = 0xF4E5  # fresh weights of rewind='reinit' / reinit probes
    PROBE_RANDOM = 0x5E1EC7  # random node/weight selection of lottery probes
    PROBE_CHOICE = 0xC401CE  # random node choice of reinit probes
    PROBE_FLATNESS = 0xF1A7  # start vectors and probes of the flatness probe's Hessian estimates
    WIDE_SEED = 0x5EED  # a seed of 2**32 or more, hashed for torch's 32-bit seeding (``seeded``)
    TEACHER_TRAIN = 0x7EAC4  # each epoch's batch order when the teacher is trained first (teacher.train, pretrain.py)


def words(*key: int) -> list[int]:
    """The 32-bit words hashed for ``key`` (see the module docstring)."""
    if all(0 <= int(k) < 2**32 for k in key):
        return [int(k) for k in key]
    out: list[int] = []
    for k in key:
        k = int(k)
        if not 0 <= k < 2**SEED_BITS:
            raise ValueError(f"seed or stream index {k} is not a {SEED_BITS}-bit non-negative integer")
        out += [k & 0xFFFFFFFF, k >> 32]
    return out + [len(key), _LONG_KEY_TAG]


def derive(seed: int, stream: Stream | int, *index: int) -> int:
    """A 64-bit seed for ``(seed, stream, *index)``."""
    return int(np.random.SeedSequence(words(seed, int(stream), *index)).generate_state(1, np.uint64)[0])


def generator(seed: int, stream: Stream | int, *index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``(seed, stream, *index)``."""
    return torch.Generator().manual_seed(derive(seed, stream, *index))


def seeded(seed: int) -> torch.Generator:
    """A generator for ``seed`` itself (teacher weights, a student's initial weights): the
    seed as it is below 2**32, its hash above (torch would drop its high bits)."""
    seed = int(seed)
    return torch.Generator().manual_seed(seed if 0 <= seed < 2**32 else derive(seed, Stream.WIDE_SEED))
