"""Tests for emul.random: Threefry keys/bits against JAX itself, LFSRs against hand tables,
known periods, the tap-polynomial recurrence and a scalar reference of the documented step."""

import subprocess
import sys

import numba
import numpy as np
import pytest

import emul.random as er
from emul.random import _as_key, _bits_flat

SEEDS = [0, 1, 42, 2**31 - 1, 2**31, 2**32 - 1, -1, -(2**31), 2**32, 2**40 + 5, 2**63 - 1]
SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (2, 0, 3), (1000,), (1 << 20,)]


@pytest.fixture(scope="module")
def jr():
    """jax.random with JAX's default config (x64 off, partitionable threefry)."""
    import jax

    assert not jax.config.jax_enable_x64 and jax.config.jax_threefry_partitionable
    return jax.random


def jbits(jr, k, shape):
    import jax.numpy as jnp

    return np.asarray(jr.bits(k, shape, jnp.uint32))


def jdata(jr, k):
    return np.asarray(jr.key_data(k))


# ----------------------------------------------------------------------------- import hygiene


def test_import_neither_imports_jax_nor_compiles():
    code = (
        "import sys, emul.random\n"
        "from emul._kernels import threefry as k\n"
        "assert 'jax' not in sys.modules\n"
        "assert not any(f.signatures for f in "
        "(k.threefry_bits, k.threefry_pairs, k.lfsr_words))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- Threefry vs JAX


@pytest.mark.parametrize("seed", SEEDS)
def test_key_matches_jax(jr, seed):
    k = er.key(seed)
    assert k.dtype == np.uint32 and k.shape == (2,)
    np.testing.assert_array_equal(k, jdata(jr, jr.key(seed)))
    np.testing.assert_array_equal(k, [0, seed % 2**32])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_bits_matches_jax(jr, seed, shape):
    got = er.bits(er.key(seed), shape)
    assert got.dtype == np.uint32 and got.shape == shape
    np.testing.assert_array_equal(got, jbits(jr, jr.key(seed), shape))


def test_bits_int_shape_and_flat():
    k = er.key(7)
    np.testing.assert_array_equal(er.bits(k, 12), er.bits(k, (12,)))
    np.testing.assert_array_equal(er.bits(k, (3, 4)).ravel(), er.bits(k, 12))
    np.testing.assert_array_equal(_bits_flat(k, 12), er.bits(k, 12))
    assert er.bits(k).shape == ()


@pytest.mark.parametrize("seed", [0, 42, -1])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 17])
def test_split_matches_jax(jr, seed, n):
    got = er.split(er.key(seed), n)
    assert got.dtype == np.uint32 and got.shape == (n, 2)
    np.testing.assert_array_equal(got, jdata(jr, jr.split(jr.key(seed), n)))


@pytest.mark.parametrize("seed", [0, 42, -1])
@pytest.mark.parametrize("data", [0, 1, 7, 2**31, 2**32 - 1, np.int32(-1), np.int64(2**40 + 1)])
def test_fold_in_matches_jax(jr, seed, data):
    got = er.fold_in(er.key(seed), data)
    assert got.dtype == np.uint32 and got.shape == (2,)
    np.testing.assert_array_equal(got, jdata(jr, jr.fold_in(jr.key(seed), data)))


def test_fold_in_wraps_python_ints_and_is_a_split_row():
    k = er.key(3)
    np.testing.assert_array_equal(er.fold_in(k, -1), er.fold_in(k, 2**32 - 1))
    np.testing.assert_array_equal(er.fold_in(k, 2**32 + 5), er.fold_in(k, 5))
    np.testing.assert_array_equal(er.split(k, 9)[5], er.fold_in(k, 5))


def test_split_fold_in_chains_match_jax(jr):
    k, jk = er.key(2024), jr.key(2024)
    for step in range(6):
        if step % 2:
            k, jk = er.fold_in(k, step * 1000 + 1), jr.fold_in(jk, step * 1000 + 1)
        else:
            k, jk = er.split(k, 3)[2], jr.split(jk, 3)[2]
        np.testing.assert_array_equal(k, jdata(jr, jk))
        np.testing.assert_array_equal(er.bits(k, (4, 33)), jbits(jr, jk, (4, 33)))
    for i, (row, jrow) in enumerate(zip(er.split(k, 4), jr.split(jk, 4))):
        np.testing.assert_array_equal(er.bits(row, 100 + i), jbits(jr, jrow, 100 + i))


def test_accepts_jax_keys_and_key_data(jr):
    import jax.numpy as jnp

    want = er.bits(er.key(5), 64)
    for k in (
        jr.key(5),  # typed key
        jr.key_data(jr.key(5)),  # its uint32 data
        jr.PRNGKey(5),  # legacy raw uint32[2]
        jnp.array([0, 5], dtype=jnp.int32),
        np.array([0, 5], dtype=np.uint32),
        np.array([0, 5], dtype=np.int64),
        [0, 5],
        (np.uint32(0), 5),
    ):
        np.testing.assert_array_equal(er.bits(k, 64), want)
        norm = _as_key(k)
        assert norm.dtype == np.uint32 and norm.shape == (2,)
    np.testing.assert_array_equal(er.split(jr.key(5), 3), jdata(jr, jr.split(jr.key(5), 3)))
    np.testing.assert_array_equal(er.fold_in(jr.key(5), 9), jdata(jr, jr.fold_in(jr.key(5), 9)))


def test_as_key_seed_and_copy():
    np.testing.assert_array_equal(_as_key(seed=-1), [0, 2**32 - 1])
    k = er.key(1)
    assert _as_key(k) is not k


def test_bits_independent_of_thread_count(monkeypatch):
    import emul._threads as T

    monkeypatch.setattr(T, "threads_pay", lambda: True)  # (also on a busy machine)
    k = er.key(99)
    n = (1 << 20) + 3
    before = numba.get_num_threads()
    try:
        results = []
        for t in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(t)
            results.append(er.bits(k, n))
    finally:
        numba.set_num_threads(before)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_bits_kernel_counters_cross_2_32():
    """A slice told its first counter (as the threads are) makes the words of those counters,
    across a multiple of 2**32 (the counter's high word changes there), as threefry2x32 does."""
    from emul._kernels import threefry as K

    k = er.key(7)
    first = 2**32 - K.BITS_BLOCK
    out = np.empty(2 * K.BITS_BLOCK + 5, np.uint32)
    K.threefry_bits(k[0], k[1], out, first)
    pairs = er._pairs(k, first, out.size)
    np.testing.assert_array_equal(out, pairs[:, 0] ^ pairs[:, 1])


# ----------------------------------------------------------------------------- key validation


@pytest.mark.parametrize(
    "bad, exc, msg",
    [
        (np.zeros(3, np.uint32), ValueError, r"key: expected 2 uint32 words, got shape \(3,\)"),
        (np.zeros((1, 2), np.uint32), ValueError, r"got shape \(1, 2\)"),
        (42, ValueError, r"got shape \(\).*key\(seed\)"),
        (np.array([0.0, 1.0]), TypeError, "got dtype float64"),
        (np.array([True, False]), TypeError, "got dtype bool"),
        ([0, -1], ValueError, r"words must be in \[0, 2\*\*32\)"),
        ([0, 2**32], ValueError, r"words must be in \[0, 2\*\*32\)"),
        ("ab", TypeError, "got dtype <U2"),
    ],
)
def test_bad_keys(bad, exc, msg):
    for f in (lambda k: er.bits(k, 3), lambda k: er.split(k), lambda k: er.fold_in(k, 1), _as_key):
        with pytest.raises(exc, match=msg):
            f(bad)


def test_bad_jax_key_impl(jr):
    with pytest.raises(ValueError, match="impl 'rbg'"):
        _as_key(jr.key(1, impl="rbg"))


def test_as_key_needs_exactly_one():
    with pytest.raises(ValueError, match="give one of them"):
        _as_key()
    with pytest.raises(ValueError, match="not both"):
        _as_key(er.key(1), seed=1)


@pytest.mark.parametrize("seed", [True, 1.0, "1", None])
def test_bad_seed(seed):
    with pytest.raises(TypeError, match="seed="):
        er.key(seed)


@pytest.mark.parametrize(
    "call, exc, msg",
    [
        (lambda: er.bits(er.key(0), -1), ValueError, "dimensions must be non-negative"),
        (lambda: er.bits(er.key(0), (2, -3)), ValueError, "dimensions must be non-negative"),
        (lambda: er.bits(er.key(0), 2.0), TypeError, "shape=2.0"),
        (lambda: er.bits(er.key(0), (2, 1.5)), TypeError, "shape="),
        (lambda: er.split(er.key(0), -1), ValueError, "n=-1"),
        (lambda: er.split(er.key(0), 2.0), TypeError, "n=2.0"),
        (lambda: er.fold_in(er.key(0), 1.5), TypeError, "data=1.5"),
    ],
)
def test_bad_arguments(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


# ----------------------------------------------------------------------------- LFSR


def ref_lfsr(n, width, taps, seed, r, kind, output):
    """Scalar reference, written directly from the lfsr docstring."""
    s = seed

    def step():
        nonlocal s
        b = s & 1
        if kind == "galois":
            s >>= 1
            if b:
                s ^= sum(1 << (t - 1) for t in taps)
        else:
            f = 0
            for t in taps:
                f ^= (s >> (width - t)) & 1
            s = (s >> 1) | (f << (width - 1))
        return b

    words = []
    for _ in range(n):
        if output == "state":
            step()
            words.append(s % 2**r)
        else:
            w = 0
            for _ in range(r):
                w = 2 * w + step()
            words.append(w)
    return words


W4 = dict(width=4, taps=(4, 3), seed=1)


@pytest.mark.parametrize(
    "kw, want",
    [
        # Fibonacci (4, 3): f = s0 ^ s1; states after each step (hand-computed).
        (dict(kind="fibonacci", output="state"), [8, 4, 2, 9, 12, 6, 11, 5]),
        (dict(kind="fibonacci", output="state", r=2), [0, 0, 2, 1, 0, 2, 3, 1]),
        # serial: s0 of 1, 8, 4, 2 -> 1000; of 9, 12, 6, 11 -> 1001; ...
        (dict(kind="fibonacci", output="serial"), [8, 9, 10, 15, 1]),
        (dict(kind="fibonacci", output="serial", r=3), [4, 2, 3, 2]),
        # Galois (4, 3): mask 0b1100, applied when the shifted-out bit is 1.
        (dict(kind="galois", output="state"), [12, 6, 3, 13, 10, 5, 14, 7]),
        # serial: s0 of 1, 12, 6, 3 -> 1001; of 13, 10, 5, 14 -> 1010; ...
        (dict(kind="galois", output="serial"), [9, 10, 15, 1]),
    ],
)
def test_lfsr_hand_computed(kw, want):
    got = er.lfsr(len(want), **W4, **kw)
    assert got.dtype == np.uint32
    assert got.tolist() == want


def test_lfsr_non_maximal_polynomial():
    # x^4 + x^2 + 1 = (x^2 + x + 1)^2: period 6 from seed 1 (hand-computed).
    assert er.lfsr(7, width=4, taps=(4, 2), seed=1).tolist() == [8, 4, 10, 5, 2, 1, 8]
    assert er.lfsr(7, width=4, taps=(4, 2), seed=1, kind="galois").tolist() == [10, 5, 8, 4, 2, 1, 10]


MAXIMAL = [
    (2, (2, 1)),
    (3, (3, 2)),
    (4, (4, 3)),
    (5, (5, 3)),
    (8, (8, 6, 5, 4)),
    (10, (10, 7)),
    (16, (16, 14, 13, 11)),
]


@pytest.mark.parametrize("width, taps", MAXIMAL)
@pytest.mark.parametrize("kind", ["fibonacci", "galois"])
def test_lfsr_maximal_period(width, taps, kind):
    period = 2**width - 1
    seed = 0b1 if width < 3 else 0b101
    states = er.lfsr(period, width=width, taps=taps, seed=seed, kind=kind)
    assert states[-1] == seed  # back to the seed after 2**width - 1 steps ...
    assert len(np.unique(states)) == period  # ... visiting every nonzero state once


@pytest.mark.parametrize("width, taps", MAXIMAL)
def test_galois_output_is_a_shift_of_fibonacci_output(width, taps):
    # Same taps, same recurrence, maximal: both emit the same m-sequence up to a phase.
    n = 2**width - 1
    fib = er.lfsr(2 * n, width=width, taps=taps, seed=1, output="serial", r=1)
    gal = er.lfsr(n, width=width, taps=taps, seed=3, kind="galois", output="serial", r=1)
    assert any((fib[d : d + n] == gal).all() for d in range(n))


CASES = [
    (1, (1,), 1),
    (4, (4, 2), 9),
    (7, (7, 6, 1), 0x55),
    (16, (16, 14, 13, 11), 0xACE1),
    (32, (32, 22, 2, 1), 0xDEADBEEF),
    (33, (33, 20), 2**33 - 1),
    (63, (63, 62), 12345),
    (64, (64, 63, 61, 60), 2**64 - 1),
    (64, (64, 1, 17), 0x8000000000000000),
]


@pytest.mark.parametrize("width, taps, seed", CASES)
@pytest.mark.parametrize("kind", ["fibonacci", "galois"])
def test_lfsr_output_bits_obey_tap_recurrence(width, taps, seed, kind):
    # Both kinds: a[n + width] = XOR over taps t of a[n + width - t].
    a = er.lfsr(4 * width + 50, width=width, taps=taps, seed=seed, kind=kind, output="serial", r=1)
    a = a.astype(np.int64)
    m = len(a) - width
    rhs = np.bitwise_xor.reduce([a[width - t : width - t + m] for t in taps], axis=0)
    np.testing.assert_array_equal(a[width:], rhs)


@pytest.mark.parametrize("width, taps, seed", CASES)
@pytest.mark.parametrize("kind", ["fibonacci", "galois"])
@pytest.mark.parametrize("output", ["state", "serial"])
def test_lfsr_matches_scalar_reference(width, taps, seed, kind, output):
    rs = {1, width, max(1, width // 3)} | ({64, 37} if output == "serial" else set())
    for r in sorted(rs):
        got = er.lfsr((3, 7), width=width, taps=taps, seed=seed, r=r, kind=kind, output=output)
        assert got.shape == (3, 7) and got.dtype == (np.uint32 if r <= 32 else np.uint64)
        assert got.ravel().tolist() == ref_lfsr(21, width, taps, seed, r, kind, output)


def test_lfsr_serial_words_pack_the_bit_stream():
    kw = dict(width=16, taps=(16, 14, 13, 11), seed=0xACE1, kind="galois", output="serial")
    bitstream = er.lfsr(40 * 7, r=1, **kw)
    words = er.lfsr(40, r=7, **kw)
    packed = bitstream.reshape(40, 7) @ (1 << np.arange(6, -1, -1))
    np.testing.assert_array_equal(words, packed)


def test_lfsr_shapes_and_defaults():
    assert er.lfsr((), **W4).tolist() == 8
    assert er.lfsr(0, **W4).shape == (0,)
    assert er.lfsr((2, 0), **W4).shape == (2, 0)
    assert er.lfsr(3, **W4).tolist() == er.lfsr(3, **W4, r=4, kind="fibonacci", output="state").tolist()


@pytest.mark.parametrize(
    "kw, exc, msg",
    [
        (dict(width=0), ValueError, "width=0: must be between 1 and 64"),
        (dict(width=65, taps=(65,)), ValueError, "width=65"),
        (dict(taps=(5, 3)), ValueError, r"taps=\(5, 3\): must be .* in 1..4"),
        (dict(taps=(4, 0)), ValueError, "in 1..4"),
        (dict(taps=()), ValueError, "non-empty"),
        (dict(taps=(3, 2)), ValueError, "must include the width 4"),
        (dict(taps=(4, 3, 3)), ValueError, "distinct"),
        (dict(taps=4), TypeError, "sequence of tap positions"),
        (dict(taps=(4, 3.0)), TypeError, "taps=3.0"),
        (dict(seed=0), ValueError, r"seed=0: must be between 1 and 2\*\*4 - 1"),
        (dict(seed=16), ValueError, "seed=16"),
        (dict(seed=-1), ValueError, "seed=-1"),
        (dict(r=0), ValueError, "r=0: must be between 1 and 4"),
        (dict(r=5), ValueError, "r=5: must be between 1 and 4 for output='state'"),
        (dict(r=65, output="serial"), ValueError, "r=65: must be between 1 and 64"),
        (dict(kind="xorshift"), ValueError, "kind='xorshift'"),
        (dict(output="parallel"), ValueError, "output='parallel'"),
        (dict(shape=-2), ValueError, "shape=-2"),
    ],
)
def test_lfsr_validation(kw, exc, msg):
    args = dict(shape=3, width=4, taps=(4, 3), seed=1) | kw
    with pytest.raises(exc, match=msg):
        er.lfsr(args.pop("shape"), **args)
