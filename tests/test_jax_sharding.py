"""Sharded emul_jax gives the same bits as one device (8 simulated CPU devices, in a subprocess:
the device count is fixed when JAX starts, and the rest of the suite runs on one device)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import emul, emul_jax

    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(8), ("d",))
    rows = NamedSharding(mesh, P("d"))
    rng = np.random.default_rng(0)
    bits = lambda a: np.asarray(a).view(np.uint32)

    # stochastic rounding: the words are a function of (key, element index), never of the shard
    x = (rng.standard_normal((64, 48)) * 4).astype(np.float32)
    key = jax.random.key(7)
    f = jax.jit(lambda x, k: emul_jax.quantize(x, "e4m3fn", "stochastic", key=k, sr_bits=8))
    one = f(jnp.asarray(x), key)
    xs = jax.device_put(x, rows)
    many = f(xs, key)
    assert len(many.sharding.device_set) == 8
    core = emul.quantize(x, "e4m3fn", "stochastic", seed=7, sr_bits=8)
    assert (bits(one) == bits(many)).all() and (bits(many) == bits(core)).all()

    # deterministic rounding into a fixed-point format, sharded along the last axis
    cols = NamedSharding(mesh, P(None, "d"))
    g = jax.jit(lambda x: emul_jax.encode(x, "fx<8,4>", "nearest_even", "wrap"))
    assert (np.asarray(g(jax.device_put(x, cols))) == emul.encode(x, "fx<8,4>", "nearest_even", "wrap")).all()
    if hasattr(emul_jax, "matmul"):
        a = emul.quantize(rng.standard_normal((16, 24)), "e4m3fn").astype(np.float32)
        b = emul.quantize(rng.standard_normal((24, 8)), "e4m3fn").astype(np.float32)
        mm = jax.jit(lambda a, b, k: emul_jax.matmul(a, b, "e4m7", order="chunked", chunk=8,
                                                    rounding="stochastic", key=k, sr_bits=8))
        one = mm(jnp.asarray(a), jnp.asarray(b), key)
        many = mm(jax.device_put(a, rows), jnp.asarray(b), key)
        core = emul.matmul(a, b, "e4m7", order="chunked", chunk=8, rounding="stochastic", seed=7, sr_bits=8)
        assert (bits(one) == bits(many)).all() and (bits(many) == bits(core.astype(np.float32))).all()
        print("matmul ok")
    print("ok")
""")


def test_sharded_results_equal_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.split()[-1] == "ok"
