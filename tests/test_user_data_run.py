"""`llm4cdsr run` on a workspace holding the user's own dataset: never silently replaced by the
synthetic demo world; display-only settings keep the run's name; a run trained on another dataset
is not taken as current."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from llm4cdsr.cli import main
from llm4cdsr.config import ConfigError, load_config, section_hash
from llm4cdsr.data.synth import generate_world
from llm4cdsr.pipeline import RUN_SECTIONS, run_name, run_pipeline, train_stage


@pytest.fixture
def own_workspace(tmp_path):
    """A workspace prepared by `prepare` from the user's CSV files (120 users, food/kitchen)."""
    interactions, items = generate_world(n_users=120, n_items=(40, 60), seed=3)
    rename = {"books": "food", "movies": "kitchen"}
    interactions["domain"] = interactions["domain"].map(rename)
    items["domain"] = items["domain"].map(rename)
    files = tmp_path / "mine"
    files.mkdir()
    interactions.to_csv(files / "inter.csv", index=False)
    items.to_csv(files / "items.csv", index=False)
    ws = tmp_path / "ws"
    assert main(["prepare", "--interactions", str(files / "inter.csv"), "--items", str(files / "items.csv"),
                 "--out", str(ws), "--no-progress", "data.min_user=4"]) == 0
    return ws, files


def _meta(ws):
    return json.loads((ws / "dataset" / "meta.json").read_text())


def test_run_without_data_uses_the_workspace_dataset(own_workspace, caplog):
    ws, _ = own_workspace
    before = (ws / "dataset" / "seq_items.npy").read_bytes()
    caplog.set_level("INFO")
    run_pipeline(load_config([], [f"workspace={ws}", "run.stages=[prepare]"]))
    meta = _meta(ws)
    assert meta["synthetic"] is False and meta["domains"] == ["food", "kitchen"]
    assert meta["data_config"]["min_user"] == 4  # its own options too, not the defaults
    assert (ws / "dataset" / "seq_items.npy").read_bytes() == before
    assert "using this workspace's dataset" in caplog.text


def test_run_keeps_the_dataset_when_its_input_files_are_gone(own_workspace, caplog):
    ws, files = own_workspace
    shutil.rmtree(files)
    run_pipeline(load_config([], [f"workspace={ws}", "run.stages=[prepare]"]))
    assert _meta(ws)["domains"] == ["food", "kitchen"]
    assert "as it is" in caplog.text


def test_asking_for_the_synthetic_world_still_replaces_it(own_workspace):
    ws, _ = own_workspace
    run_pipeline(load_config([], [f"workspace={ws}", "run.stages=[prepare]", "data.format=synthetic",
                                  "data.synth.users=100", "data.synth.items_a=30", "data.synth.items_b=40"]))
    assert _meta(ws)["synthetic"] is True


def test_display_settings_keep_the_run_name(tmp_path):
    base = load_config([], [f"workspace={tmp_path}"])
    quiet = load_config([], [f"workspace={tmp_path}", "train.progress=false", "train.num_threads=1", "train.tensorboard=true"])
    assert run_name(quiet) == run_name(base)
    # Runs named before keep their names: the defaults hash as the whole sections always did,
    # apart from the data keys added later (at the value every earlier run had in effect).
    old = dict(base, data={k: v for k, v in base["data"].items() if k not in ("duplicates", "encoding")})
    assert run_name(base).endswith(section_hash(old, *RUN_SECTIONS)[:8])
    assert run_name(load_config([], [f"workspace={tmp_path}", "train.lr=0.01"])) != run_name(base)


def test_a_run_trained_on_another_dataset_is_not_current(own_workspace):
    ws, _ = own_workspace
    cfg = load_config([], [f"workspace={ws}", "run.name=old"])
    run_dir = ws / "runs" / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run_dir / "results.json").write_text("{}")
    (run_dir / "dataset_info.json").write_text(json.dumps({"fingerprint": "0" * 16}))
    with pytest.raises(ConfigError, match="trained on another dataset"):
        train_stage(cfg, run_dir)
