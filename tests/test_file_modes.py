"""Every file of a run folder has one mode: that of an ordinary open() under the process's umask.
Atomic writes go through mkstemp, whose 0600 the renamed artifact used to keep."""
import os
import stat


def test_a_run_folder_has_one_file_mode(one_epoch_run):
    _, run_dir = one_epoch_run("sasrec_mixed")
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run_dir.rglob("*") if p.is_file()}
    assert {"model.safetensors", "checkpoint.pt", "results.json", "config.yaml", "ranks.parquet"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes
