"""The Python API: raw ids in, raw ids out.

    import llm4cdsr.api as cdsr
    run_dir = cdsr.run("configs/food-kitchen.yaml", "train.epochs=20")     # the whole job

    est = cdsr.Estimator("configs/food-kitchen.yaml", workspace="ws")       # estimator style
    est.fit()                       # prepare, embed, profile, train (each skipped when current)
    est.evaluate()                  # the run's results (valid and test, both protocols)
    est.recommend(["u00001"], k=10, domain="food")                          # a DataFrame (COLUMNS)
    est.save("my-model"); est = cdsr.Estimator.load("my-model")

    rec = cdsr.TrainedRecommender.load("ws/runs/llm4cdsr-seed42-...")        # just the scorer
    rec.recommend("u00001", k=10)                                            # the same DataFrame shape
    rec.recommend_history(["B000BIZT3E", "B002IYDXW8"], k=5, domain="kitchen")
"""
from __future__ import annotations

import os

# Before torch loads, as the CLI does (llm4cdsr/cli/__init__.py): OpenMP threads that spin while
# waiting made training through the API 2-10x slower than the CLI on a shared machine (issue 20:
# 5.0-7.5 s an epoch against 2.3-3.2 s with one core busy). A value the user set wins; a program
# that imported torch before this module keeps the policy torch started with.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil  # noqa: E402
from collections.abc import Iterable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from llm4cdsr.config import load_config  # noqa: E402
from llm4cdsr.io import read_json  # noqa: E402
from llm4cdsr.pipeline import run_pipeline  # noqa: E402
from llm4cdsr.recommender import COLUMNS, TrainedRecommender, UnknownUserError  # noqa: E402
from llm4cdsr.workspace import Workspace, profile_dir  # noqa: E402

__all__ = ["COLUMNS", "Estimator", "TrainedRecommender", "UnknownUserError", "run"]


# ----- the whole job ------------------------------------------------------------------------------
def run(config: str | Path | dict | None = None, *overrides: str) -> Path:
    """Run the whole pipeline (prepare, embed, profile, train, report); return the run folder."""
    cfg = config if isinstance(config, dict) else load_config([config] if config else [], overrides)
    return run_pipeline(cfg)


class Estimator:
    """fit / evaluate / recommend / save / load around one configured run."""

    def __init__(self, config: str | Path | dict | None = None, overrides: Sequence[str] = (), **keys: Any):
        extra = [f"{k}={v}" for k, v in keys.items()]
        self.cfg = config if isinstance(config, dict) else load_config([config] if config else [], list(overrides) + extra)
        self.run_dir: Path | None = None
        self._rec: TrainedRecommender | None = None

    def fit(self) -> Estimator:
        cfg = dict(self.cfg, run=dict(self.cfg["run"], stages=[s for s in self.cfg["run"]["stages"] if s != "report"]))
        self.run_dir = run_pipeline(cfg)
        self._rec = None
        return self

    @property
    def recommender(self) -> TrainedRecommender:
        if self.run_dir is None:
            raise RuntimeError("call fit() (or Estimator.load) first")
        if self._rec is None:
            self._rec = TrainedRecommender.load(self.run_dir)
        return self._rec

    def evaluate(self) -> dict:
        if self.run_dir is None:
            raise RuntimeError("call fit() (or Estimator.load) first")
        return read_json(self.run_dir / "results.json")

    def recommend(self, user_ids: Iterable[str], k: int = 10, domain: str | None = None, exclude_seen: bool = True) -> pd.DataFrame:
        """One row per (user, rank), columns `COLUMNS`: user_id, rank, item_id, domain, title, score, new."""
        return self.recommender.recommend_batch(user_ids, k, domain, exclude_seen)

    def save(self, path: str | Path) -> Path:
        """A self-contained copy: the run folder plus the dataset and LLM artifacts it reads."""
        if self.run_dir is None:
            raise RuntimeError("nothing to save: call fit() first")
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists; choose a new folder")
        ws_src = self.recommender.workspace
        ws_dst = Workspace(path)
        shutil.copytree(ws_src.dataset_dir, ws_dst.dataset_dir)
        profiles = profile_dir(dict(self.recommender.cfg, workspace=str(ws_src.root)))
        for folder in (ws_src.embed_dir, profiles):
            if folder.is_dir():
                shutil.copytree(folder, ws_dst.root / folder.name)
        shutil.copytree(self.run_dir, ws_dst.runs_dir / self.run_dir.name, ignore=shutil.ignore_patterns("checkpoint.pt"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Estimator:
        """Load a saved estimator (Estimator.save) or a workspace holding exactly one run, or a run folder."""
        path = Path(path)
        if (path / "config.yaml").is_file():
            run_dir = path
        else:
            runs = sorted(p for p in Workspace(path).runs_dir.glob("*") if (p / "results.json").is_file())
            if len(runs) != 1:
                raise FileNotFoundError(f"{path}: expected one finished run under runs/, found {len(runs)}")
            run_dir = runs[0]
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        cfg["workspace"] = str(run_dir.resolve().parent.parent)
        est = cls(cfg)
        est.run_dir = run_dir
        return est
