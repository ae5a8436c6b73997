"""Random streams: one derivation from (seed, Stream, *index), all 64 bits of every seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teacherstudent.build import build
from teacherstudent.errors import UserError
from teacherstudent.seeds import Stream, derive, generator, words

from conftest import tiny

CPU = torch.device("cpu")


def test_stream_ids_are_distinct():
    assert len({int(s) for s in Stream}) == len(Stream)


def test_32_bit_keys_hash_exactly_as_before():
    """0.2 hashed SeedSequence([seed, stream, *index]): run numbers of existing configs depend on it."""
    for key in [(0, 1), (7, 3, 5), (2**32 - 1, 0x5E1EC7, 4, 1, 2)]:
        old = int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0])
        assert derive(*key) == old


def test_seeds_differing_only_above_32_bits_give_distinct_streams():
    seeds = [0, 2**32, 2**33, 2**63, 2**64 - 1, 2**32 + 1, 1]
    values = {derive(s, Stream.TRAIN) for s in seeds}
    assert len(values) == len(seeds)
    # a long key never meets a short one, even where its words would line up
    assert words(2**32, 1) != words(0, 1, 1)
    assert derive(2**32, Stream.TRAIN) != derive(0, Stream.TRAIN, 1)


def test_inputs_seed_beyond_32_bits_gives_other_data():
    a = build(tiny(inputs__seed=0), CPU).data
    b = build(tiny(inputs__seed=2**32), CPU).data
    assert not torch.equal(a.x_eval, b.x_eval)
    assert not torch.equal(a.epoch(0)[0], b.epoch(0)[0])


def test_student_seeds_beyond_32_bits_give_other_students():
    ens = build(tiny(student__seeds=[5, 5 + 2**32]), CPU).ens
    assert not torch.equal(ens.weights[0][0], ens.weights[0][1])


def test_generators_are_independent_of_global_state():
    torch.manual_seed(1)
    a = torch.rand(3, generator=generator(3, Stream.ORDER, 2))
    torch.manual_seed(2)
    b = torch.rand(3, generator=generator(3, Stream.ORDER, 2))
    assert torch.equal(a, b)


def test_negative_or_oversized_seeds_are_one_line_errors():
    with pytest.raises(UserError, match="teacher.seed"):
        tiny(teacher__seed=-1)
    with pytest.raises(UserError, match="inputs.seed"):
        tiny(inputs__seed=2**64)


def test_teacher_seeds_beyond_32_bits_give_other_teachers():
    a = build(tiny(teacher__seed=3), CPU).teacher
    b = build(tiny(teacher__seed=3 + 2**32), CPU).teacher
    assert not torch.equal(a.weights[0], b.weights[0])
