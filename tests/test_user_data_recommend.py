"""Items added after training (`add_items`, `recommend --new-items`) under the default learned local
tables: a copy of a known item scores like it; bad new-item files fail in one line naming the file;
rows left out are reported."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from llm4cdsr.cli import main
from llm4cdsr.recommender import TrainedRecommender, learned_local_vectors

TINY = ["data.synth.users=150", "data.synth.items_a=60", "data.synth.items_b=90", "model.hidden=32",
        "embed.local_dim=32", "model.blocks=1", "train.epochs=1", "train.progress=false", "eval.num_negatives=20",
        "model.beta=0", "run.stages=[prepare,embed,train]", "run.baselines=[]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    assert main(["run", "-w", str(ws), *TINY, "run.name=tiny"]) == 0
    return ws / "runs" / "tiny"


@pytest.fixture
def rec(run_dir) -> TrainedRecommender:
    """The run, its learned local tables moved well away from their PCA start (as long training
    moves them): a new item's local vector must follow the learned rows, not the PCA view."""
    rec = TrainedRecommender.load(run_dir)
    assert rec.cfg["model"]["freeze_local"] is False  # the default under test
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for branch in rec.model.local:
            weight = branch.items.weight
            weight[1:] += 3 * weight[1:].std() * torch.randn(weight[1:].shape, generator=gen)
    return rec


def test_a_copy_of_a_known_item_scores_like_it(rec):
    row = rec.dataset.items.iloc[10]
    copy = pd.DataFrame([{**row.to_dict(), "item_id": "copy-of-10"}]).drop(columns=["global_id", "local_id", "raw_id"])
    assert rec.add_items(copy) == 1
    for user in rec.dataset.user_ids[:5]:
        recs = rec.recommend(user, k=500, domain=row["domain"], exclude_seen=False)
        by_id = {r["item_id"]: r for r in recs.to_dict("records")}
        assert by_id["copy-of-10"]["new"] is True
        assert by_id["copy-of-10"]["score"] == pytest.approx(by_id[row["raw_id"]]["score"], abs=1e-3)
        assert abs(by_id["copy-of-10"]["rank"] - by_id[row["raw_id"]]["rank"]) == 1  # side by side


def test_learned_local_vectors_map_and_correct():
    rng = np.random.default_rng(0)
    pca = rng.normal(size=(200, 8))
    rows = pca @ rng.normal(size=(8, 8)) + 0.3 * rng.normal(size=(200, 8))
    # A trained item's own text gets its own learned row (the residual of an exact match).
    assert np.allclose(learned_local_vectors(pca[:5], pca, rows), rows[:5], atol=1e-4)
    # An unseen text far from every item follows the fitted linear map.
    far = rng.normal(size=(1, 8)) * 0.5
    assert np.isfinite(learned_local_vectors(far, pca, rows)).all()


def test_new_items_rows_left_out_are_reported_and_nan_ids_refused(rec):
    a, b = rec.domains
    known = rec.dataset.items["raw_id"].iloc[0]
    items = pd.DataFrame({"item_id": ["n1", known, "n3"], "domain": [a, a, "toys"], "title": ["x", "y", "z"]})
    assert rec.add_items(items) == 1
    assert rec.skipped_new_items == {"known_id": [known], "unknown_domain": ["n3"]}
    with pytest.raises(ValueError, match="missing value"):
        rec.add_items(pd.DataFrame({"item_id": ["NaN"], "domain": [a], "title": ["t"]}))


@pytest.mark.parametrize("content, message", [
    ('item_id,domain,title\nn1,books,"unclosed\n', "cannot read"),
    ("item_id,domain\nn1,books\n", "missing: title"),
    ("", "empty file"),
])
def test_cli_new_items_bad_files_fail_in_one_line(run_dir, tmp_path, capsys, content, message):
    path = tmp_path / "new.csv"
    path.write_text(content)
    user = TrainedRecommender.load(run_dir).dataset.user_ids[0]
    assert main(["recommend", "--run", str(run_dir), "--user", user, "--new-items", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 or "note:" in err[0]
    assert str(path) in err[-1] and message in err[-1]


def test_cli_new_items_reports_rows_left_out(run_dir, tmp_path, capsys):
    rec = TrainedRecommender.load(run_dir)
    known = rec.dataset.items["raw_id"].iloc[0]
    path = tmp_path / "new.csv"
    pd.DataFrame({"item_id": ["n1", known, "n3"], "domain": [rec.domains[0]] * 2 + ["toys"],
                  "title": ["a", "b", "c"]}).to_csv(path, index=False)
    assert main(["recommend", "--run", str(run_dir), "--user", rec.dataset.user_ids[0], "--new-items", str(path)]) == 0
    err = capsys.readouterr().err
    assert "1 new item" in err and "left out" in err and known in err and "n3" in err


# ----- recommend and serve do what they were asked, or say why not in one line -----------------
def _copy_run(run_dir: Path, name: str) -> Path:
    import shutil

    target = run_dir.parent / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run_dir, target)
    return target


def test_an_unfinished_run_is_refused_by_recommend_and_serve(run_dir, capsys):
    training = _copy_run(run_dir, "still-training")
    (training / "results.json").unlink()  # weights of an early epoch, no results yet
    user = TrainedRecommender.load(run_dir).dataset.user_ids[0]
    assert main(["recommend", "--run", str(training), "--user", user]) == 2
    err = capsys.readouterr().err.strip()
    assert "has not finished" in err and len(err.splitlines()) == 1
    assert main(["serve", str(training), "--port", "8765"]) == 2
    assert "has not finished" in capsys.readouterr().err


def test_a_changed_dataset_is_one_line_for_recommend_and_serve(run_dir, capsys):
    stale = _copy_run(run_dir, "stale")
    info = json.loads((stale / "dataset_info.json").read_text())
    (stale / "dataset_info.json").write_text(json.dumps(dict(info, fingerprint="0" * 16)))
    user = TrainedRecommender.load(run_dir).dataset.user_ids[0]
    assert main(["recommend", "--run", str(stale), "--user", user]) == 2
    err = capsys.readouterr().err.strip()
    assert "changed since this run was trained" in err and "Traceback" not in err
    assert main(["serve", str(stale), "--port", "8765"]) == 2
    assert "changed since this run was trained" in capsys.readouterr().err


def test_recommend_out_is_written_in_every_mode_and_its_suffix_checked(run_dir, tmp_path, capsys):
    user = TrainedRecommender.load(run_dir).dataset.user_ids[0]
    out = tmp_path / "recs.csv"
    assert main(["recommend", "--run", str(run_dir), "--user", user, "-k", "3", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 3 and (frame["user_id"] == user).all()
    assert main(["recommend", "--run", str(run_dir), "--user", user, "--out", str(tmp_path / "recs.txt")]) == 2
    assert ".csv or .jsonl" in capsys.readouterr().err and not (tmp_path / "recs.txt").exists()


def test_recommend_history_names_unknown_ids_and_why_needs_a_user(run_dir, capsys):
    rec = TrainedRecommender.load(run_dir)
    history = ",".join(list(rec.dataset.items["raw_id"].iloc[:2]) + ["nope-1", "nope-2"])
    assert main(["recommend", "--run", str(run_dir), "--history", history, "-k", "2"]) == 0
    err = capsys.readouterr().err
    assert "2 of 4 item ids unknown" in err and "nope-1, nope-2" in err
    assert main(["recommend", "--run", str(run_dir), "--history", history, "--why"]) == 2
    assert "--why" in capsys.readouterr().err


def test_recommend_batch_skips_and_reports_an_unknown_user(run_dir, tmp_path, capsys):
    rec = TrainedRecommender.load(run_dir)
    users = tmp_path / "users.txt"
    users.write_text("\n".join([*rec.dataset.user_ids[:2], "ghost"]) + "\n")
    out = tmp_path / "r.csv"
    assert main(["recommend", "--run", str(run_dir), "--users-file", str(users), "-k", "2", "--out", str(out)]) == 0
    assert "1 of 3 users unknown" in capsys.readouterr().err
    assert set(pd.read_csv(out)["user_id"]) == set(rec.dataset.user_ids[:2])


def test_serve_options_fail_in_one_line(run_dir, capsys, monkeypatch):
    import importlib.util

    assert main(["serve", str(run_dir), "--port", "80000"]) == 2
    assert "--port 80000" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "serve extra" in err and "uvicorn" in err
