"""`emul warmup`: compiles one group per call, reports its time, rejects unknown groups."""

import pytest

from emul import cli
from emul.warmup import GROUPS, warmup


def test_warmup_runs_a_group_and_reports_its_time(capsys):
    assert cli.main(["warmup", "sparsity"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("sparsity") and "total" in out
    (name, seconds), = warmup(["sparsity"])
    assert name == "sparsity" and seconds >= 0


def test_warmup_rejects_unknown_groups(capsys):
    with pytest.raises(ValueError, match="unknown warm-up group"):
        warmup(["sparsity", "nope"])
    assert cli.main(["warmup", "nope"]) == 2
    assert "choose from" in capsys.readouterr().err
    assert set(GROUPS) == {"encode", "arith", "accumulate", "sparsity", "blocks", "vectors"}
