"""Threads for the kernels. A Numba ``parallel=True`` kernel compiles 2-3x slower than the same
loop on one thread (measured: the SR matmul kernel 75 s vs 30 s of CPU), so the big kernels are
serial, release the GIL (``nogil=True``), and are run on slices of their rows from a thread pool.
Small jobs run on one thread: waking threads costs more than it saves, and on a busy machine
(more runnable threads than cores) a barrier can stall for milliseconds. Results never depend on
the thread count or the split, only speed does."""

import contextlib
import math
import os

_POOL = None


def pool():
    """The process's thread pool for kernel slices (created on first use)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="emul")
    return _POOL


def spare_cores() -> float:
    """Cores minus the runnable threads (the caller's own included): the lesser of the 1-minute
    load average and, on Linux, the count runnable now (/proc/loadavg's fourth field). The average
    alone also counts this process's own threads of the last minute, so a long run of large calls
    would turn its own threads off; the count alone catches short-lived processes. Infinite where
    the platform has neither. The callers' thread heuristics read it: only speed depends on it,
    never a result."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        load = math.inf
    try:
        with open("/proc/loadavg") as f:
            load = min(load, int(f.read().split()[3].split("/")[0]))
    except (OSError, IndexError, ValueError):
        pass
    return (os.cpu_count() or 1) - load


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


def run_slices(call, n, threads=None, align=1):
    """``call(lo, hi)`` over slices [lo, hi) of [0, n) that together cover it, one slice per
    thread: the first on the calling thread, the others on the thread pool; returns the results in
    slice order. Each slice must be independent of the others. ``threads``: at most this many
    (default: Numba's thread count, which single_thread_below lowers for small jobs); ``align``:
    slice starts are multiples of it."""
    import numba

    threads = min(numba.get_num_threads() if threads is None else threads, n)
    if threads <= 1:
        return [call(0, n)]
    step = -(-n // threads)
    step += -step % align
    from concurrent.futures import wait

    jobs = [pool().submit(call, lo, min(lo + step, n)) for lo in range(step, n, step)]
    try:
        first = call(0, min(step, n))  # the calling thread takes the first slice: one wake-up fewer
    finally:
        wait(jobs)  # no slice is still running when this returns or raises
    return [first] + [j.result() for j in jobs]


def run_rows(kernel, args, rows):
    """``kernel(*args, *(a[lo:hi] for a in rows))`` over slices of the first axis of the arrays
    ``rows`` (all of one length), as run_slices; returns the kernel's results in slice order."""
    return run_slices(lambda lo, hi: kernel(*args, *(a[lo:hi] for a in rows)), len(rows[0]))


def prefault(out):
    """Write one byte per MiB of the fresh array ``out`` on the calling thread, so that its pages
    (transparent huge pages where the system gives them) are faulted in before several threads
    write it. Two threads faulting huge pages of one fresh array at once ran for tens of calls at
    ~470 M elements/s on the 2-core machine of bench/quantize.py (f64 -> bf16, 16 M elements; a
    kernel that does no rounding at all did the same), against ~3000 when the calling thread has
    faulted them first (which costs ~10% when the slow phase does not strike). Only speed depends
    on this: the kernels overwrite every byte."""
    out.reshape(-1).view("uint8")[::1 << 20] = 0


def threads_pay(min_spare: float = 1.0) -> bool:
    """Whether a large call should use Numba's threads: more than one thread is set and the
    machine has at least ``min_spare`` cores to spare (:func:`spare_cores`). On an oversubscribed
    machine a parallel region waits for descheduled threads and measured 10-17x slower than one
    thread. Only speed depends on this, never a result."""
    import numba

    return numba.get_num_threads() >= 2 and spare_cores() >= min_spare
