"""A stage that reads another stage's artifacts checks that they are current: `train` alone (and `run`
without its embed or profile stage) stops with one line naming the stale folder and the command that
rebuilds it, instead of training on the old texts or failing on a shape."""
from __future__ import annotations

from pathlib import Path

import pytest
from openai_stub import OpenAIStub, stub_overrides

from llm4cdsr.cli import main
from llm4cdsr.data.synth import synth_dataset
from llm4cdsr.workspace import Workspace

TRAIN = ["model.name=llm4cdsr", "model.hidden=8", "model.heads=1", "model.max_len=10", "train.progress=false",
         "eval.num_negatives=4", "train.epochs=1", "train.num_threads=1", "embed.global_dim=8"]


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dim=16) as s:
        yield s


@pytest.fixture
def ws(tmp_path, stub) -> Path:
    """A workspace with a dataset, its item embeddings and template profiles, all current."""
    root = tmp_path / "ws"
    synth_dataset(n_users=100, n_items=(80, 100), seed=0).save(Workspace(root).dataset_dir)
    common = ["-w", str(root), *stub_overrides(stub, chat=False), *TRAIN]
    assert main(["embed", *common]) == 0
    assert main(["profile", *common]) == 0
    return root


def _args(ws: Path, stub, *extra: str) -> list[str]:
    return ["-w", str(ws), *stub_overrides(stub, chat=False), *TRAIN, *extra]


def _error(capsys, command: str = "train") -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(f"llm4cdsr {command}: error: "), err[-2000:]
    return last


def test_train_refuses_embeddings_of_another_dataset(ws, stub, capsys):
    # Re-prepared with other titles (same shapes): the old vectors would have trained silently.
    reshuffled = synth_dataset(n_users=100, n_items=(80, 100), seed=0)
    reshuffled.items["title"] = reshuffled.items["title"].to_numpy()[::-1]
    reshuffled.save(Workspace(ws).dataset_dir)
    assert main(["train", *_args(ws, stub)]) == 2
    line = _error(capsys)
    assert f"{ws / 'embeddings'} is stale: made from another dataset" in line
    assert f"`llm4cdsr embed -w {ws}`" in line
    assert not (ws / "runs").exists() or not any((ws / "runs").iterdir())


def test_train_refuses_embeddings_of_other_settings(ws, stub, capsys):
    assert main(["train", *_args(ws, stub, "embed.max_chars=50")]) == 2
    line = _error(capsys)
    assert "embeddings is stale: made under other embed.* settings" in line and "llm4cdsr embed" in line


def test_train_refuses_profiles_of_other_settings(ws, stub, capsys):
    assert main(["train", *_args(ws, stub, "profile.n_clusters=3")]) == 2
    line = _error(capsys)
    assert f"{ws / 'profiles'} is stale: made from other profile.* settings" in line
    assert f"`llm4cdsr profile -w {ws}`" in line


def test_run_without_its_embed_stage_refuses_stale_embeddings(ws, stub, capsys):
    synth_dataset(n_users=100, n_items=(80, 101), seed=1).save(Workspace(ws).dataset_dir)  # another item count
    assert main(["run", *_args(ws, stub, "run.stages=[train]")]) == 2
    assert "embeddings is stale: made from another dataset" in _error(capsys, "run")


def test_current_artifacts_train(ws, stub, capsys):
    assert main(["train", *_args(ws, stub, "--run-name", "r")]) == 0
    assert (ws / "runs" / "r" / "results.json").is_file()
    # The run records the exact LLM inputs it trained on, by content.
    import json

    import numpy as np

    from llm4cdsr.training.run import array_digest
    from llm4cdsr.workspace import load_item_vectors

    results = json.loads((ws / "runs" / "r" / "results.json").read_text(encoding="utf-8"))
    vectors = load_item_vectors(Workspace(ws), tuple(results["dataset"]["domains"]))
    assert results["llm_inputs"]["item_vectors_sha256"] == array_digest(vectors.raw, vectors.global_pca, *vectors.local_pca)
    profiles = np.load(ws / "profiles" / "embeddings.npy")
    assert results["llm_inputs"]["profiles_sha256"] == array_digest(profiles.astype(np.float32))


def test_a_dataset_prepared_again_alike_keeps_its_embeddings_and_profiles(ws, stub, capsys):
    # The same arrays written again by another engine or package version: only the record of how it
    # was made changes (engine, config echo, prepare report). Hours of LLM calls must not go stale.
    import json

    from llm4cdsr.llm.stages import embed_is_current

    meta_path = Workspace(ws).dataset_dir / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps(dict(meta, engine="duckdb 9.9", config_hash="0" * 16, pipeline_version=99,
                                         data_config={"format": "other"}, prepare_report={"steps": []})), encoding="utf-8")
    cfg_args = _args(ws, stub, "--run-name", "again")
    assert main(["train", *cfg_args]) == 0, capsys.readouterr().err[-2000:]
    from llm4cdsr.config import load_config

    assert embed_is_current(load_config([], [f"workspace={ws}", *stub_overrides(stub, chat=False), *TRAIN]))


def test_artifacts_that_recorded_the_legacy_fingerprint_stay_current(ws, stub, capsys):
    import json

    from llm4cdsr.llm.stages import legacy_dataset_fingerprint

    for folder in ("embeddings", "profiles"):
        path = ws / folder / "meta.json"
        meta = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps(dict(meta, dataset_fingerprint=legacy_dataset_fingerprint(Workspace(ws).dataset_dir))),
                        encoding="utf-8")
    assert main(["train", *_args(ws, stub, "--run-name", "legacy")]) == 0, capsys.readouterr().err[-2000:]
