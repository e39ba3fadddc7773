"""emul._threads.run_slices: the split the kernels' thread tests rely on (pure Python, no kernels)."""

import threading
import time

import pytest

from emul._threads import run_slices


def test_slices_cover_in_order_aligned_first_on_the_calling_thread():
    caller = threading.get_ident()
    got = run_slices(lambda lo, hi: (lo, hi, threading.get_ident() == caller), 100_003, threads=3, align=64)
    assert [(lo, hi) for lo, hi, _ in got] == [(0, 33_344), (33_344, 66_688), (66_688, 100_003)]
    assert [on_caller for _, _, on_caller in got] == [True, False, False]
    assert run_slices(lambda lo, hi: (lo, hi), 5, threads=1) == [(0, 5)]
    assert run_slices(lambda lo, hi: (lo, hi), 1, threads=4) == [(0, 1)]


def test_an_error_in_the_first_slice_waits_for_the_others():
    finished = []

    def call(lo, hi):
        if lo == 0:
            raise ValueError("first slice")
        time.sleep(0.05)
        finished.append(lo)

    with pytest.raises(ValueError, match="first slice"):
        run_slices(call, 10, threads=2)
    assert finished == [5]  # the pool's slice had finished before the error reached the caller
