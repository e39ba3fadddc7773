"""Run small jobs on one thread: a parallel region costs a thread wake-up and a barrier, which on
a busy machine (more runnable threads than cores) can stall for milliseconds. Results never depend
on the thread count, only speed does."""

import contextlib


@contextlib.contextmanager
def single_thread_below(work: int, threshold: int):
    """Within the block, Numba uses one thread when ``work < threshold`` (else its default)."""
    import numba  # deferred: `import emul` does not load Numba

    before = numba.get_num_threads()
    if work < threshold:
        numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)
