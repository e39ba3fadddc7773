"""Every reference in docs/, the README and the docstrings resolves inside the project.

A reader must be able to follow each one: a named page (``docs/rounding.md``, ``PAPERS.md``) must be
a file of this repository, and a dotted API name in backticks (```emul.sparsity.mvue```) must import.
"""

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("emul/**/*.py"), *ROOT.glob("emul_jax/**/*.py"),
                  *ROOT.glob("reference/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("examples/**/*.py")])
PAGE = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.md)\b")
SPEC_SECTION = re.compile(r"\b(SEMANTICS|PAPERS|PEERS|STYLE)\b")
API = re.compile(r"`(emul(?:_jax)?(?:\.[A-Za-z_]\w*)+)")


def _page_exists(ref: str, src: pathlib.Path) -> bool:
    return any((base / ref).is_file() for base in (ROOT, ROOT / "docs", src.parent))


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_references_resolve(src):
    text = src.read_text()
    missing = [ref for ref in PAGE.findall(text) if not _page_exists(ref, src)]
    assert not missing, f"{src.name} names pages that are not in the project: {sorted(set(missing))}"
    specs = sorted({m.group(0) for m in SPEC_SECTION.finditer(text)})
    assert not specs, f"{src.name} cites the design specs {specs}, which are not shipped: cite docs/ pages instead"
    if src.suffix == ".md" or src.parts[-2] != "tests":
        broken = [name for name in set(API.findall(text)) if not _resolves(name)]
        assert not broken, f"{src.name} names APIs that do not exist: {sorted(broken)}"
