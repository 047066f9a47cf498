"""Shared fixtures for the liquid-core tests.

Every test starts from fixed torch / numpy / random seeds so that the suite is
deterministic; tests that check seeding behaviour reseed explicitly.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    yield


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Small tensors: thread start-up costs more than the arithmetic.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
