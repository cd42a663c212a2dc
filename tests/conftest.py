"""Shared test fixtures. Keep this small; append fixtures others need at the end."""
from __future__ import annotations

from pathlib import Path

import pytest

# CI checks the repository out beside ../shared, which holds the real data sets.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def synth_ds():
    """A small prepared synthetic dataset (300 users, books 120 + movies 180 items). Do not mutate."""
    from llm4cdsr.data.synth import synth_dataset

    return synth_dataset(seed=0)


@pytest.fixture(scope="session")
def synth_world():
    """(interactions, items) frames of a small synthetic world, generic table form. Do not mutate."""
    from llm4cdsr.data.synth import generate_world

    return generate_world(n_users=300, n_items=(120, 180), seed=0)


@pytest.fixture(scope="session")
def food_kitchen_dir() -> Path:
    """The real Food x Kitchen set; tests using it skip when ../shared/data is absent."""
    path = SHARED_DATA / "food-kitchen"
    if not (path / "interactions.csv").is_file():
        pytest.skip(f"real data not found at {path} (CI keeps it at ../shared/data beside the clone)")
    return path


@pytest.fixture
def one_epoch_run(synth_ds, tmp_path):
    """run(model_name) -> (results, run_dir): one epoch of a small model through train_run on
    synth_ds, with both protocols' test metrics checked to be in range."""
    from llm4cdsr.config import load_config
    from llm4cdsr.training.run import train_run

    def run(model_name: str):
        cfg = load_config([], [f"workspace={tmp_path}", f"model.name={model_name}", "model.hidden=16", "model.max_len=20",
                               "model.dropout=0.2", "train.batch_size=64", "train.progress=false", "train.epochs=1",
                               "eval.num_negatives=30", "eval.batch_size=128"])
        run_dir = tmp_path / "runs" / model_name
        results = train_run(cfg, run_dir, synth_ds)
        assert results["best_epoch"] == 1
        for mode in ("sampled", "full"):
            for block in ("overall", *synth_ds.domains):
                assert 0.0 <= results["test"][mode][block]["ndcg@10"] <= 1.0
        return results, run_dir

    return run
