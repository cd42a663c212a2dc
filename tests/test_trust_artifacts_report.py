"""The report is written whole or not at all, and a run it cannot read is one line naming what to do."""
from __future__ import annotations

from pathlib import Path

import pytest

from llm4cdsr import report as report_module
from llm4cdsr.cli import main
from llm4cdsr.data.synth import synth_dataset
from llm4cdsr.report import build_report
from llm4cdsr.workspace import Workspace

# One error line, no traceback (pytest puts tests/ on sys.path).
from test_trust_artifacts_damaged import _error  # noqa: E402

POP = ["model.name=pop", "eval.num_negatives=20", "train.progress=false", "train.num_threads=1"]


@pytest.fixture
def run_dir(tmp_path, synth_ds) -> Path:
    ws = tmp_path / "ws"
    synth_ds.save(Workspace(ws).dataset_dir)
    assert main(["train", "-w", str(ws), *POP, "--run-name", "pop"]) == 0
    return ws / "runs" / "pop"


def test_a_killed_report_leaves_the_previous_page_and_is_not_current(run_dir, monkeypatch):
    index, written = build_report(run_dir, item_map_items=50)
    assert written
    before = {p.name: p.read_bytes() for p in index.parent.iterdir()}
    assert before["index.html"] and before["domains_sampled.png"]

    def killed_while_saving(runs, domains, metric, mode, out, **kw):
        out.write_bytes(b"")  # what a process killed inside savefig leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module, "plot_run_comparison", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        build_report(run_dir, item_map_items=50, force=True)  # `run --force` during its report stage
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in index.parent.iterdir()} == before
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".report")]  # no partial folder left
    assert build_report(run_dir, item_map_items=50, force=False) == (index, False)  # the old page is current


def test_a_kill_9_partial_report_folder_is_removed_by_the_next_report(run_dir):
    partial = run_dir / ".report.partial-999999999-x"  # a dead writer's folder (no such pid)
    partial.mkdir()
    (partial / "index.html").write_text("")
    build_report(run_dir, item_map_items=50)
    assert not partial.exists() and (run_dir / "report" / "index.html").stat().st_size > 0


def test_report_after_the_dataset_changed_is_one_line(tmp_path, capsys):
    ws = tmp_path / "ws"
    synth_dataset(n_users=120, n_items=(60, 80), seed=0).save(Workspace(ws).dataset_dir)
    assert main(["train", "-w", str(ws), *POP, "--run-name", "pop"]) == 0
    synth_dataset(n_users=120, n_items=(60, 81), seed=1).save(Workspace(ws).dataset_dir)
    capsys.readouterr()
    assert main(["report", str(ws / "runs" / "pop")]) == 2
    line = _error(capsys, "report")
    assert "changed since this run was trained" in line


@pytest.mark.parametrize("name", ["results.json", "config.yaml", "dataset_info.json", "metrics.jsonl"])
def test_a_corrupt_run_file_is_one_line_naming_it(run_dir, capsys, name):
    (run_dir / name).write_text("{not: [valid" if name != "metrics.jsonl" else '{"epoch": 1}\n{"ep')
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 2
    line = _error(capsys, "report")
    assert str(run_dir / name) in line, line
