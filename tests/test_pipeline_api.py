"""End to end on a tiny synthetic world: `llm4cdsr run`, recommend (user, history, batch, new
items), the Python API, the report and the HTTP server, all through their real entry points."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from llm4cdsr.api import COLUMNS, Estimator, TrainedRecommender, UnknownUserError
from llm4cdsr.cli import main

TINY = [
    "data.synth.users=150", "data.synth.items_a=60", "data.synth.items_b=90",
    "model.hidden=32", "embed.local_dim=32", "model.blocks=1",
    "train.epochs=2", "train.progress=false", "run.item_map_items=150", "eval.num_negatives=20",
    "model.beta=1",  # the default is 0 (measured); 1 takes the profile stage through every entry point
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    assert main(["run", "-w", str(ws), *TINY, "run.name=tiny"]) == 0
    return ws / "runs" / "tiny"


@pytest.fixture(scope="module")
def rec(run_dir) -> TrainedRecommender:
    return TrainedRecommender.load(run_dir)


def test_run_writes_every_artifact(run_dir):
    ws = run_dir.parent.parent
    for path in ("dataset/meta.json", "embeddings/meta.json", "profiles/meta.json", "candidates"):
        assert (ws / path).exists(), path
    results = json.loads((run_dir / "results.json").read_text())
    for mode in ("sampled", "full"):
        for part in ("overall", *results["dataset"]["domains"]):
            assert 0.0 <= results["test"][mode][part]["ndcg@10"] <= results["test"][mode][part]["hit@10"] <= 1.0
    report = run_dir / "report"
    assert (report / "index.html").is_file()
    for png in ("curves.png", "domains_sampled.png", "domains_full.png", "groups.png", "item_map.png"):
        assert (report / png).stat().st_size > 1000, png
    assert "item_map.png" in (report / "index.html").read_text()


def test_demo_is_marked_synthetic_everywhere(run_dir, rec, capsys):
    """results.json, train.log, the report, recommend and compare all say the demo world is synthetic."""
    ws = run_dir.parent.parent
    assert json.loads((run_dir / "results.json").read_text())["dataset"]["synthetic"] is True
    assert "SYNTHETIC" in (run_dir / "train.log").read_text()
    assert "SYNTHETIC" in (run_dir / "report" / "index.html").read_text()
    assert rec.synthetic
    assert main(["recommend", "--run", str(run_dir), "--user", rec.dataset.user_ids[0], "-k", "2"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().err
    assert main(["compare", "-w", str(ws), "tiny"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out


def test_run_trains_the_popularity_baseline_for_the_report(run_dir):
    ws = run_dir.parent.parent
    pops = [p for p in (ws / "runs").glob("pop-seed*") if (p / "results.json").is_file()]
    assert len(pops) == 1
    page = (run_dir / "report" / "index.html").read_text()
    assert pops[0].name in page and "no popularity baseline" not in page
    # The protocol is named beside the figures, and the data summary is there.
    assert "sampled (20 neg.)" in page and "target + 20 negatives" in page and "users with both domains" in page


def test_report_is_skipped_when_nothing_changed(run_dir, caplog):
    ws = run_dir.parent.parent
    index = run_dir / "report" / "index.html"
    before = index.stat().st_mtime_ns
    caplog.set_level("INFO")
    assert main(["run", "-w", str(ws), *TINY, "run.name=tiny"]) == 0
    assert "is current, skipped" in caplog.text.split("report:")[-1] and index.stat().st_mtime_ns == before
    # Another run's results changed: the comparison on the page is stale, so the page is written again.
    other = next(p for p in (ws / "runs").glob("pop-seed*"))
    (other / "results.json").write_text((other / "results.json").read_text() + "\n")
    caplog.clear()
    assert main(["run", "-w", str(ws), *TINY, "run.name=tiny"]) == 0
    assert index.stat().st_mtime_ns != before and "is current, skipped" not in caplog.text.split("report:")[-1]


def test_second_run_skips_every_stage(run_dir, caplog):
    ws = run_dir.parent.parent
    before = (run_dir / "results.json").stat().st_mtime_ns
    caplog.set_level("INFO")
    assert main(["run", "-w", str(ws), *TINY, "run.name=tiny", "run.stages=[prepare,embed,profile,train]"]) == 0
    assert (run_dir / "results.json").stat().st_mtime_ns == before
    assert "is current, skipped" in caplog.text


def test_changed_config_under_the_same_name_is_refused(run_dir):
    ws = run_dir.parent.parent
    assert main(["run", "-w", str(ws), *TINY, "run.name=tiny", "train.lr=0.01", "run.stages=[train]"]) == 2


def test_recommend_known_user_excludes_history(rec):
    user = rec.dataset.user_ids[3]
    recs = rec.recommend(user, k=7)
    assert list(recs["rank"]) == list(range(1, 8)) and set(recs["user_id"]) == {user}
    assert list(recs["score"]) == sorted(recs["score"], reverse=True)
    seen = set(rec.dataset.items["raw_id"].to_numpy()[rec.dataset.sequence(3) - 1])
    assert not seen & set(recs["item_id"])
    food = rec.recommend(user, k=5, domain=rec.domains[1])
    assert set(food["domain"]) == {rec.domains[1]}
    with_seen = rec.recommend(user, k=500, domain=rec.domains[0], exclude_seen=False)
    assert seen & set(with_seen["item_id"]) == {i for i in seen if i.startswith(rec.domains[0])}


def test_every_recommend_call_returns_one_frame_shape(rec, run_dir):
    """recommend, recommend_history, recommend_batch and Estimator.recommend: the same columns and types."""
    users = list(rec.dataset.user_ids[:2])
    frames = [rec.recommend(users[0], k=3), rec.recommend_history(rec.dataset.items["raw_id"].tolist()[:2], k=3),
              rec.recommend_batch(users, k=3), Estimator.load(run_dir).recommend(users, k=3)]
    for frame in frames:
        assert isinstance(frame, pd.DataFrame) and list(frame.columns) == COLUMNS
        assert list(frame.dtypes.astype(str)) == list(frames[0].dtypes.astype(str))
    assert frames[1]["user_id"].isna().all()
    pd.testing.assert_frame_equal(frames[2].head(3), frames[0])


def test_recommend_matches_the_model_scores(rec):
    """The API's scores are the model's own scores for the user's full history."""
    import torch

    from llm4cdsr.models import pad_histories

    u = 5
    recs = rec.recommend(rec.dataset.user_ids[u], k=3, domain=rec.domains[0], exclude_seen=False)
    states = rec.model.user_states(pad_histories([rec.dataset.sequence(u).tolist()], rec.model.max_len))
    scores = rec.model.score(states, 0)[0].detach()
    top = torch.topk(scores, 3)
    assert [round(float(s), 5) for s in top.values] == list(recs["score"])


def test_unknown_user_and_bad_arguments(rec):
    with pytest.raises(UnknownUserError, match="nobody"):
        rec.recommend("nobody")
    with pytest.raises(ValueError, match="unknown domain"):
        rec.recommend(rec.dataset.user_ids[0], domain="shoes")
    with pytest.raises(ValueError, match="none of the history"):
        rec.recommend_history(["not-an-item"])


def test_recommend_history_for_a_new_user(rec):
    items = rec.dataset.items["raw_id"].tolist()
    history = items[:3] + ["unknown-item"]
    recs = rec.recommend_history(history, k=4, domain=rec.domains[0])
    assert len(recs) == 4 and not set(history) & set(recs["item_id"])


def test_new_items_score_like_the_trained_item_they_copy(rec):
    """Inductive scoring: an item that is a text copy of a known item, under a new id, gets that
    item's score (global adapter + its local PCA vector, which is frozen by default)."""
    row = rec.dataset.items.iloc[10]
    new = pd.DataFrame([{**row.to_dict(), "item_id": "brand-new-item"}]).drop(columns=["global_id", "local_id", "raw_id"])
    assert rec.add_items(new) == 1
    try:
        user = rec.dataset.user_ids[7]
        recs = rec.recommend(user, k=500, domain=row["domain"], exclude_seen=False)
        by_id = {r["item_id"]: r for r in recs.to_dict("records")}
        assert by_id["brand-new-item"]["new"] is True
        assert by_id["brand-new-item"]["score"] == pytest.approx(by_id[row["raw_id"]]["score"], abs=2e-3)
    finally:
        rec._new_items.clear()


def test_cli_recommend_modes(run_dir, rec, tmp_path, capsys):
    user = rec.dataset.user_ids[0]
    assert main(["recommend", "--run", str(run_dir), "--user", user, "-k", "3", "--why"]) == 0
    out = capsys.readouterr().out
    assert "profile: [template]" in out and out.count("\n") >= 5
    users = tmp_path / "users.txt"
    users.write_text("\n".join(rec.dataset.user_ids[:4]) + "\n")
    assert main(["recommend", "--run", str(run_dir), "--users-file", str(users), "-k", "2", "--out", str(tmp_path / "r.csv")]) == 0
    frame = pd.read_csv(tmp_path / "r.csv")
    assert len(frame) == 8 and set(frame["user_id"]) == set(rec.dataset.user_ids[:4])
    assert main(["recommend", "--run", str(run_dir), "--users-file", str(users), "--out", str(tmp_path / "r.jsonl")]) == 0
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 40
    assert main(["recommend", "--run", str(run_dir), "--user", "nobody"]) == 2
    assert "unknown user 'nobody'" in capsys.readouterr().err


def test_recommend_as_a_program_leaves_quickly_with_its_output_whole(run_dir, rec):
    """`llm4cdsr recommend` skips the interpreter's teardown (os._exit): stdout, a pipe here, must
    still arrive complete, and the exit code must still tell success from a bad user."""
    import subprocess
    import sys

    user = rec.dataset.user_ids[0]
    cmd = [sys.executable, "-m", "llm4cdsr", "recommend", "--run", str(run_dir), "--user", user, "-k", "5"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["rank", "score"] and len(lines) == 6 and lines[-1].split()[0] == "5"
    bad = subprocess.run(cmd[:-4] + ["--user", "nobody"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown user 'nobody'" in bad.stderr


def test_estimator_fit_save_load(run_dir, tmp_path):
    ws = run_dir.parent.parent
    est = Estimator(None, overrides=[*TINY, "run.name=tiny"], workspace=str(ws)).fit()
    assert est.run_dir.resolve() == run_dir.resolve()
    assert est.evaluate()["best_epoch"] >= 1
    users = list(est.recommender.dataset.user_ids[:2])
    first = est.recommend(users, k=3)
    saved = est.save(tmp_path / "saved")
    again = Estimator.load(saved).recommend(users, k=3)
    pd.testing.assert_frame_equal(first, again)


def test_http_server(rec):
    pytest.importorskip("fastapi")
    import uvicorn

    from llm4cdsr.serve import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(rec), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            health = client.get("/health").json()
            assert health["domains"] == list(rec.domains) and health["synthetic"] is True and "SYNTHETIC" in health["note"]
            user = rec.dataset.user_ids[2]
            body = client.post("/recommend", json={"user_id": user, "k": 4, "why": True}).json()
            assert len(body["items"]) == 4 and body["profile"].startswith("[template]")
            assert body["items"] == json.loads(rec.recommend(user, k=4).drop(columns="user_id").to_json(orient="records"))
            hist = rec.dataset.items["raw_id"].tolist()[:2]
            assert len(client.post("/recommend", json={"history": hist, "k": 2}).json()["items"]) == 2
            assert client.post("/recommend", json={"user_id": "nobody"}).status_code == 404
            assert client.post("/recommend", json={"user_id": user, "k": 0}).status_code == 422
            assert client.post("/recommend", json={"user_id": user, "domain": "shoes"}).status_code == 422
            assert client.post("/recommend", json={"user_id": user, "history": hist}).status_code == 422
            assert client.post("/recommend", json={"user_id": user, "extra": 1}).status_code == 422
            big = {"history": ["x" * 100] * 2000}
            assert client.post("/recommend", json=big).status_code == 413
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_item_map_sample_shapes(rec):
    m = rec.item_map_sample(50, seed=1)
    assert m["before"].shape[0] == m["after"].shape[0] == len(m["domain"]) == 50
    assert m["after"].shape[1] == rec.cfg["model"]["hidden"]
    assert set(np.unique(m["domain"])) <= {0, 1}


def test_overlap_experiment_cli(run_dir, tmp_path, capsys):
    ws = run_dir.parent.parent
    out = tmp_path / "overlap"
    assert main(["experiment", "overlap", "-w", str(ws), *TINY, "train.epochs=1", "--ratios", "0,1",
                 "--models", "pop,sasrec_mixed", "--out", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 2 * 2 * 2  # ratios x models x protocols
    assert (out / "overlap.png").stat().st_size > 1000
    assert "| 0 | pop |" in (out / "results.md").read_text()
    zero = table[(table.ratio == 0) & (table["mode"] == "sampled")]
    assert (zero["kept_both"] == 0).all() and (zero["training_items_dropped"] > 0).all()


def test_evaluate_on_the_authors_chimeric_ruler(run_dir, tmp_path):
    out = tmp_path / "chimeric.json"
    assert main(["evaluate", str(run_dir), "eval.chimeric_negatives=true", "-o", str(out)]) == 0
    chimeric = json.loads(out.read_text())
    honest = json.loads((run_dir / "results.json").read_text())
    assert chimeric["sampled_scoring"].startswith("chimeric") and honest["sampled_scoring"] == "one item per candidate"
    # full ranking has no negatives to pair: unchanged; the sampled ruler is another one
    assert chimeric["test"]["full"]["overall"] == honest["test"]["full"]["overall"]
    assert chimeric["test"]["sampled"]["overall"]["ndcg@10"] != honest["test"]["sampled"]["overall"]["ndcg@10"]
