"""A trained run, ready to recommend: raw ids in, raw ids out, one DataFrame shape out.

    rec = TrainedRecommender.load("ws/runs/llm4cdsr-seed42-...")
    rec.recommend("u00001", k=10)                                   # a known user
    rec.recommend_history(["B000BIZT3E", "B002IYDXW8"], k=5)        # a user not in training
    rec.recommend_batch(["u00001", "u00002"], k=10, domain="food")  # many users

Every call returns a DataFrame with the columns `COLUMNS`, one row per (user, rank). This module
sits below both the Python API (`llm4cdsr.api`) and the pipeline (`llm4cdsr.pipeline`), which
both need it; neither of those is imported here.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.llm.texts import item_texts
from llm4cdsr.models import pad_histories
from llm4cdsr.training.candidates import dataset_fingerprint
from llm4cdsr.training.run import load_run
from llm4cdsr.workspace import Workspace, profile_dir

# The shape of every recommendation: user_id is None for a history given as item ids; `new` marks
# items added after training (add_items), scored inductively.
COLUMNS = ["user_id", "rank", "item_id", "domain", "title", "score", "new"]


class UnknownUserError(KeyError):
    """A user id the run's dataset does not hold."""

    def __str__(self) -> str:  # KeyError would print the repr of its message
        return str(self.args[0]) if self.args else "unknown user"


class TrainedRecommender:
    """A trained run, ready to recommend. Histories are the users' full known sequences (training,
    validation and test interactions): at serving time the next item is what comes after all of them."""

    def __init__(self, model, cfg: dict, info: dict, dataset: PreparedDataset, run_dir: Path, workspace: Workspace):
        self.model = model
        self.cfg = cfg
        self.info = info
        self.dataset = dataset
        self.run_dir = Path(run_dir)
        self.workspace = workspace
        self.domains: tuple[str, str] = tuple(dataset.domains)
        # The built-in demo world is generated, not observed: every output says so.
        self.synthetic = bool(dataset.meta.get("synthetic", False))
        self._users = dataset.user_lookup()
        self._items = dataset.item_lookup()
        self._titles = dataset.items["title"].fillna("").astype(str).to_numpy()
        self._raw_items = dataset.items["raw_id"].astype(str).to_numpy()
        self._tables: dict[int, torch.Tensor | None] = {}  # domain -> item table, made on first use
        self._profiles: pd.DataFrame | None = None
        self._new_items: dict[int, dict[str, Any]] = {}  # domain -> inductive items (see add_items)

    @property
    def run_name(self) -> str:
        return self.run_dir.name

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainedRecommender:
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir}: not a run folder (no config.yaml)")
        model, cfg, info = load_run(run_dir)
        # A run lives in <workspace>/runs/<name>; that beats a relative path recorded at training time.
        ws = Workspace(run_dir.resolve().parent.parent)
        if not (ws.dataset_dir / "meta.json").is_file():
            ws = Workspace(cfg["workspace"])
        dataset = PreparedDataset.load(ws.dataset_dir)
        if info.get("fingerprint") and info["fingerprint"] != dataset_fingerprint(dataset):
            raise ValueError(f"{run_dir}: the dataset in {ws.dataset_dir} changed since this run was trained; train again")
        return cls(model, cfg, info, dataset, run_dir, ws)

    # ----- ids ----------------------------------------------------------------------------------
    def user_index(self, user_id: str) -> int:
        try:
            return self._users[str(user_id)]
        except KeyError:
            raise UnknownUserError(f"unknown user {user_id!r}: not in the dataset of run {self.run_name}") from None

    def _domain_arg(self, domain: str | None) -> list[int]:
        if domain is None:
            return [0, 1]
        if domain not in self.domains:
            raise ValueError(f"unknown domain {domain!r} (this run has {self.domains[0]!r} and {self.domains[1]!r})")
        return [self.domains.index(domain)]

    # ----- recommending -------------------------------------------------------------------------
    def recommend(self, user_id: str, k: int = 10, domain: str | None = None, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-k items for a known user (one row per rank). domain=None ranks both domains' items together."""
        return self.recommend_batch([user_id], k, domain, exclude_seen)

    def recommend_history(self, raw_item_ids: Sequence[str], k: int = 10, domain: str | None = None,
                          exclude_seen: bool = True) -> pd.DataFrame:
        """Top-k items after a history given as raw item ids (oldest first): for users not in training.

        Items of the history that the dataset does not know are skipped (the encoder reads ids);
        an empty history after that is an error. The user_id column is None.
        """
        history = [self._items[str(i)] for i in raw_item_ids if str(i) in self._items]
        if not history:
            raise ValueError("none of the history's item ids is known to this run's dataset")
        items = self._recommend_many([np.asarray(history, dtype=np.int64)], [None], k, domain, exclude_seen)[0]
        return _frame([None] * len(items), items)

    def recommend_batch(self, user_ids: Iterable[str], k: int = 10, domain: str | None = None, exclude_seen: bool = True,
                        batch_size: int = 512) -> pd.DataFrame:
        """One row per (user, rank), users in the order given: the columns of `COLUMNS`."""
        ids = [str(u) for u in user_ids]
        index = [self.user_index(u) for u in ids]
        users: list[str] = []
        items: list[dict] = []
        for start in range(0, len(ids), batch_size):
            chunk = index[start:start + batch_size]
            recs = self._recommend_many([self.dataset.sequence(u) for u in chunk], chunk, k, domain, exclude_seen)
            for uid, rows in zip(ids[start:start + batch_size], recs):
                users += [uid] * len(rows)
                items += rows
        return _frame(users, items)

    def _table(self, d: int) -> torch.Tensor | None:
        """The domain's item table, computed once (None for models that score without one)."""
        if d not in self._tables:
            try:
                self._tables[d] = self.model.item_table(d)
            except NotImplementedError:
                self._tables[d] = None
        return self._tables[d]

    @torch.no_grad()
    def _recommend_many(self, histories: list[np.ndarray], users: list[int | None], k: int, domain: str | None,
                        exclude_seen: bool) -> list[list[dict]]:
        if k < 1:
            raise ValueError("k must be at least 1")
        domains = self._domain_arg(domain)
        seq = pad_histories([h.tolist() for h in histories], self.model.max_len)  # (B, L)
        user_idx = torch.tensor([u if u is not None else 0 for u in users])
        states = self.model.user_states(seq, user_idx)  # (B, 2, K)
        per_user: list[list[tuple[float, int, int, bool]]] = [[] for _ in histories]
        for d in domains:
            if d not in getattr(self.model, "eval_domains", (0, 1)):
                continue
            table = self._table(d)
            scores = self.model.score(states, d, table=table) if table is not None else self.model.score(states, d)  # (B, n_d + 1)
            scores = scores.clone()
            if exclude_seen:
                for b, h in enumerate(histories):
                    local = self.dataset.to_local(h[self.dataset.domain_of(h) == d])
                    scores[b, torch.as_tensor(local, dtype=torch.long)] = float("-inf")
            top = torch.topk(scores, min(k, scores.shape[1] - 1), dim=1)
            for b in range(len(histories)):
                for s, local_id in zip(top.values[b].tolist(), top.indices[b].tolist()):
                    if s != float("-inf"):
                        per_user[b].append((s, d, local_id, False))
            new = self._new_items.get(d)
            if new is not None:
                new_scores = self.model.score_vectors(states, d, new["global"], new["local"])  # (B, C)
                for b in range(len(histories)):
                    for j, s in enumerate(new_scores[b].tolist()):
                        per_user[b].append((s, d, j, True))
        out = []
        for entries in per_user:
            entries.sort(key=lambda e: -e[0])
            out.append([self._describe(rank + 1, *e) for rank, e in enumerate(entries[:k])])
        return out

    def _describe(self, rank: int, score: float, domain: int, local_id: int, new: bool) -> dict:
        if new:
            meta = self._new_items[domain]
            item_id, title = meta["raw_ids"][local_id], meta["titles"][local_id]
        else:
            g = int(self.dataset.to_global(local_id, domain)) - 1
            item_id, title = self._raw_items[g], self._titles[g]
        return {"rank": rank, "item_id": item_id, "domain": self.domains[domain], "title": title,
                "score": round(float(score), 5), "new": new}

    # ----- inductive items ----------------------------------------------------------------------
    @torch.no_grad()
    def add_items(self, items: pd.DataFrame) -> int:
        """Make items that were not in training recommendable (inductive scoring).

        `items` has item_id, domain, title (and any text columns the embed template uses). Their
        texts are embedded with the run's embedding model and projected with the saved PCA
        (global, and the domain's local PCA); the model scores them through its global adapter
        plus, with the default frozen PCA local tables, their local PCA vectors, which is exactly
        what a trained item's score is made of. Only LLM-vector models can do this.
        """
        # Imported here, not at the top: llm.stages and llm.pca bring sklearn, scipy and httpx,
        # 1.6 s of CPU at start-up (measured, `import llm4cdsr.llm.stages` after torch and pandas)
        # that a one-off `llm4cdsr recommend` without --new-items would pay for nothing.
        from safetensors.numpy import load_file

        from llm4cdsr.llm.pca import project
        from llm4cdsr.llm.stages import make_embedder

        if getattr(getattr(self.model, "global_items", None), "kind", None) != "llm":
            raise NotImplementedError(f"model {self.cfg['model']['name']} scores items by id only; it cannot score new items")
        missing = {"item_id", "domain", "title"} - set(items.columns)
        if missing:
            raise ValueError(f"new items need the columns item_id, domain, title (missing: {', '.join(sorted(missing))})")
        known = items["item_id"].astype(str).isin(self._items.keys())
        items = items[~known]
        pca = load_file(str(self.workspace.embed_dir / "pca.safetensors"))
        cfg = dict(self.cfg, workspace=str(self.workspace.root))
        embedder = make_embedder(cfg, stage="recommend", progress=False)
        frozen_local = bool(self.cfg["model"].get("freeze_local", True)) and self.cfg["model"].get("local_init") == "pca"
        added = 0
        try:
            for d, name in enumerate(self.domains):
                part = items[items["domain"].astype(str) == name]
                if part.empty:
                    continue
                raw = embedder.embed(item_texts(part, cfg))
                g = project(raw, pca["global.mean"], pca["global.components"])
                local = project(raw, pca[f"local.{name}.mean"], pca[f"local.{name}.components"]) if frozen_local else None
                self._new_items[d] = {
                    "global": torch.as_tensor(_pad(g, self.model.global_items.llm_vectors.shape[1])),
                    "local": torch.as_tensor(_pad(local, self.cfg["model"]["hidden"])) if local is not None else None,
                    "raw_ids": part["item_id"].astype(str).tolist(),
                    "titles": part["title"].fillna("").astype(str).tolist(),
                }
                added += len(part)
        finally:
            embedder.cache.close()
        return added

    # ----- explanations and pictures ------------------------------------------------------------
    def profile_text(self, user_id: str) -> str | None:
        """The user's profile statement (LLM-written or template), if the workspace has profiles."""
        u = self.user_index(user_id)
        if self._profiles is None:
            path = profile_dir(dict(self.cfg, workspace=str(self.workspace.root))) / "profiles.parquet"
            if not path.is_file():
                return None
            self._profiles = pd.read_parquet(path).set_index("user_idx")
        if u not in self._profiles.index:
            return None
        row = self._profiles.loc[u]
        source = row.get("source", "")
        return f"[{source}] {row['text']}" if source else str(row["text"])

    @torch.no_grad()
    def item_map_sample(self, n: int = 3000, seed: int = 0) -> dict[str, np.ndarray]:
        """LLM vectors of a seeded item sample before and after the global adapter, with domains."""
        items = getattr(self.model, "global_items", None)
        if getattr(items, "kind", None) != "llm":
            raise NotImplementedError(f"model {self.cfg['model']['name']} has no LLM adapter")
        total = self.dataset.n_items_total
        rng = np.random.default_rng(seed)
        ids = np.sort(rng.choice(np.arange(1, total + 1), size=min(n, total), replace=False))
        before = items.llm_vectors[torch.as_tensor(ids)]
        after = items.adapter(before)
        return {"before": before.numpy(), "after": after.numpy(), "domain": self.dataset.domain_of(ids).astype(int)}


def _frame(users: list[str | None], items: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(items, columns=COLUMNS[1:])
    frame.insert(0, "user_id", pd.Series(users, dtype=object))
    return frame.astype({"rank": "int64", "score": "float64", "new": "bool"})


def _pad(x: np.ndarray | None, width: int) -> np.ndarray | None:
    """Zero columns up to `width`: the saved tables keep their width even when PCA fitted fewer."""
    if x is None or x.shape[1] == width:
        return x
    out = np.zeros((x.shape[0], width), dtype=np.float32)
    out[:, : x.shape[1]] = x
    return out
