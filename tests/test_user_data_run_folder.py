"""What a user sees of a run folder and its log: every file has one mode, that of an ordinary open()
under the process's umask (atomic writes go through mkstemp, whose 0600 the renamed artifact used to
keep), and the minutes of final evaluation are announced."""
import os
import stat


def test_a_run_folder_has_one_file_mode(one_epoch_run):
    _, run_dir = one_epoch_run("sasrec_mixed")
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run_dir.rglob("*") if p.is_file()}
    assert {"model.safetensors", "checkpoint.pt", "results.json", "config.yaml", "ranks.parquet"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_the_final_evaluation_is_announced_before_it_runs(one_epoch_run, caplog):
    # On a large set the evaluation of both protocols takes minutes after the last epoch's line.
    with caplog.at_level("INFO", logger="llm4cdsr"):
        one_epoch_run("sasrec_mixed")
    lines = [r.getMessage() for r in caplog.records]
    announce = next(i for i, m in enumerate(lines) if m.startswith("evaluating the best epoch (1) on validation and test"))
    assert any(m.startswith("test ") for m in lines[announce + 1:])
