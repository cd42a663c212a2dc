"""The CLI does what it was asked, or says in one line why not: compare's metric, recommend's
options and inputs, serve's options, overrides after options."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml

from llm4cdsr.cli import main


def _finished_run(root, name):
    d = root / "runs" / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": 1, "model": {"name": "pop"}}), encoding="utf-8")
    metrics = {"overall": {"hit@10": 0.5, "ndcg@10": 0.25}, "a": {"ndcg@10": 0.3}, "b": {"ndcg@10": 0.2}}
    (d / "results.json").write_text(json.dumps({"dataset": {"domains": ["a", "b"]},
                                                "test": {"sampled": metrics, "full": metrics}}), encoding="utf-8")
    pd.DataFrame({"user_idx": np.arange(3), "rank_sampled": [0.0, 2.0, 30.0],
                  "rank_full": [0.0, 2.0, 30.0]}).to_parquet(d / "ranks.parquet")
    return d


def test_compare_refuses_a_metric_the_runs_never_computed(tmp_path, capsys):
    _finished_run(tmp_path, "a")
    _finished_run(tmp_path, "b")
    assert main(["compare", "-w", str(tmp_path), "--metric", "ndcg@7"]) == 2
    err = capsys.readouterr().err
    assert "'ndcg@7' is not among the metrics" in err and "hit@10, ndcg@10" in err
    assert main(["compare", "-w", str(tmp_path), "--metric", "ndcg@10"]) == 0


def test_the_api_sets_the_thread_wait_policy_before_torch_loads():
    """`import llm4cdsr.api` behaves like the CLI: passive OpenMP waiting (spinning threads made the
    API several times slower than the CLI on a shared machine), unless the user chose a policy."""
    import os
    import subprocess
    import sys

    code = "import os, sys; import llm4cdsr.api; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"), capture_output=True,
                         text=True, timeout=300)
    assert out.stdout.strip() == "ACTIVE", out.stderr


def test_overrides_are_accepted_after_options(tmp_path, capsys):
    from llm4cdsr.cli import build_parser, parse

    args = parse(build_parser(), ["run", "-w", str(tmp_path), "model.name=pop", "--run-name", "x", "seed=43"])
    assert args.overrides == ["model.name=pop", "seed=43"] and args.run_name == "x"
    try:
        parse(build_parser(), ["run", "model.name=pop", "--run-name", "x", "--bogus"])
    except SystemExit as e:
        assert e.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def _table(tmp_path, sep=",", encoding="utf-8", title="Caf\u00e9 cr\u00e8me"):
    from llm4cdsr.data.synth import generate_world

    interactions, items = generate_world(n_users=40, n_items=(20, 30), seed=1)
    items = items.assign(title=[title] + list(items["title"].iloc[1:]))
    inter, table = tmp_path / "inter.csv", tmp_path / "items.csv"
    interactions.to_csv(inter, index=False, sep=sep)
    items.to_csv(table, index=False, sep=sep, encoding=encoding)
    return inter, table


def test_a_latin1_file_names_the_line_and_data_encoding(tmp_path, capsys):
    inter, items = _table(tmp_path, encoding="latin-1")
    ws = tmp_path / "ws"
    assert main(["prepare", "--interactions", str(inter), "--items", str(items), "--out", str(ws), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(items) in err and "line 2" in err and "data.encoding" in err and len(err.strip().splitlines()) == 1
    # A failed first prepare leaves no workspace holding only its lock file.
    assert not ws.exists()
    assert main(["prepare", "--interactions", str(inter), "--items", str(items), "--out", str(ws), "--no-progress",
                 "data.encoding=latin-1"]) == 0


def test_a_tab_separated_file_points_at_csv_sep(tmp_path, capsys):
    inter, items = _table(tmp_path, sep="\t")
    assert main(["prepare", "--interactions", str(inter), "--items", str(items), "--out", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert "data.csv_sep" in err and "tab" in err and str(inter) in err
    assert main(["prepare", "--interactions", str(inter), "--items", str(items), "--out", str(tmp_path / "ws"),
                 "--no-progress", 'data.csv_sep="\\t"']) == 0


def test_a_wrong_preset_name_lists_the_presets(capsys):
    assert main(["prepare", "-c", "food-kitchn"]) == 2
    err = capsys.readouterr().err
    assert "food-kitchen" in err and "presets are" in err
