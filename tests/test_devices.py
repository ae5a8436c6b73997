"""Device choice: ``pick_device`` names, CUDA indices and spellings."""

from __future__ import annotations

import pytest
import torch

from teacherstudent.errors import UserError
from teacherstudent.simulate import pick_device


def test_cuda_index_and_spelling_are_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    assert pick_device("cuda") == torch.device("cuda")
    for bad in ("cuda:3", "cuda:x", "cuda:-1"):
        with pytest.raises(UserError):
            pick_device(bad)
