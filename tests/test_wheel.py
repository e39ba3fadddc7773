"""The wheel a user installs: built from the source tree (pip, build isolation), it holds only the
``emul`` and ``emul_jax`` packages (no top-level ``reference``), its metadata carries the SPDX
license expression, the build prints no deprecation warning, and installed non-editable into a
fresh virtual environment it runs the CLI and a smoke test from outside the source tree.

The fresh environment gets emul from the wheel only (``--no-index --no-deps``); its dependencies
(numpy, numba, llvmlite) are the test environment's, linked in through a ``.pth`` file, so the
test needs no network beyond the build backend that pip's build isolation fetches.
"""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPS = ("numpy", "numpy.libs", "numba", "llvmlite")

pytestmark = pytest.mark.slow  # builds a wheel and compiles emul's kernels afresh (about a minute)


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-v", "--disable-pip-version-check",
              "-w", str(out)])
    log = r.stdout + r.stderr
    (whl,) = out.glob("emul-*.whl")
    return whl, log


def test_wheel_holds_only_the_product(wheel):
    whl, log = wheel
    names = zipfile.ZipFile(whl).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"emul", "emul_jax", f"{whl.name.split('-')[0]}-{whl.name.split('-')[1]}.dist-info"}
    assert "emul/vectors/_compare.py" in names and "emul/study.py" in names
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    assert not [ln for ln in log.splitlines() if "deprecat" in ln.lower()], "the build warns about a deprecation"


def test_installed_wheel_runs_outside_the_source_tree(wheel, tmp_path):
    whl, _ = wheel
    env_dir = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    py = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "--no-deps",
          "--disable-pip-version-check", str(whl)])
    # the dependencies, and only them, from this environment
    site = Path(sysconfig.get_paths()["purelib"])
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in site.iterdir():
        if entry.name in DEPS or any(entry.name.startswith(d + "-") and entry.name.endswith(".dist-info")
                                     for d in DEPS):
            (deps / entry.name).symlink_to(entry)
    fresh_site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(fresh_site) / "emul_test_deps.pth").write_text(str(deps) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    work = tmp_path / "elsewhere"
    work.mkdir()
    info = _run([str(env_dir / "bin" / "emul"), "info", "e2m1fn"], cwd=work, env=env).stdout
    assert "max           6.0" in info
    _run([str(env_dir / "bin" / "emul"), "vectors", "mul", "--fmt", "e2m1fn", "--exhaustive", "-o", "mul.hex"],
         cwd=work, env=env)
    assert (work / "mul.hex").read_text().count("\n") == 256 + 8  # 8 header lines
    smoke = """
import importlib.util, emul
assert emul.__file__.startswith(%r), emul.__file__
assert importlib.util.find_spec("reference") is None  # no top-level golden model installed
assert emul.encode(1.0, "e4m3fn") == 56
assert float(emul.dot([1.0] * 1000, [1.0] * 1000, "bf16")) == 256.0
print("ok")
""" % fresh_site
    assert _run([str(py), "-c", smoke], cwd=work, env=env).stdout.strip() == "ok"
