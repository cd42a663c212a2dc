"""One damaged run no longer breaks `compare` for the whole workspace: it is named and left out."""
from __future__ import annotations

import pytest

from llm4cdsr.cli import main
from llm4cdsr.workspace import Workspace

POP = ["model.name=pop", "eval.num_negatives=20", "train.progress=false", "train.num_threads=1"]


@pytest.mark.parametrize("name", ["results.json", "config.yaml", "ranks.parquet"])
def test_compare_skips_and_names_a_damaged_run(tmp_path, synth_ds, capsys, name):
    ws = tmp_path / "ws"
    synth_ds.save(Workspace(ws).dataset_dir)
    for run in ("a", "b"):
        assert main(["train", "-w", str(ws), *POP, "--run-name", run]) == 0
    path = ws / "runs" / "b" / name
    path.write_bytes(path.read_bytes()[:40])
    capsys.readouterr()
    assert main(["compare", "-w", str(ws)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert f"llm4cdsr compare: skipped the damaged run {ws / 'runs' / 'b'}: " in err, err
    assert "pop" in out
