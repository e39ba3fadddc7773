"""Shared oracles and hypothesis strategies."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def ml_dtypes():
    return pytest.importorskip("ml_dtypes")


def stratified_f32(n_log2=24, seed=0):
    """2**n_log2 float32 bit patterns: every value of the top n_log2 bits, random low bits."""
    rng = np.random.default_rng(seed)
    shift = 32 - n_log2
    high = np.arange(1 << n_log2, dtype=np.uint64) << np.uint64(shift)
    low = rng.integers(0, 1 << shift, size=high.size, dtype=np.uint64) if shift else 0
    return (high | low).astype(np.uint32).view(np.float32)
