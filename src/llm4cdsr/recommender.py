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

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.data.raw import MISSING_MARKERS, listing
from llm4cdsr.llm.texts import item_texts
from llm4cdsr.models import pad_histories
from llm4cdsr.training.candidates import dataset_fingerprint
from llm4cdsr.training.diagnostics import item_sample
from llm4cdsr.training.run import RunError, load_run
from llm4cdsr.workspace import ArtifactError, Workspace, profile_dir

log = logging.getLogger("llm4cdsr.recommend")

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
        self.skipped_new_items: dict[str, list[str]] = {"known_id": [], "unknown_domain": []}  # the last add_items

    @property
    def run_name(self) -> str:
        return self.run_dir.name

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainedRecommender:
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir}: not a run folder (no config.yaml)")
        # results.json is written last, after the test: without it the run is still training (or
        # was stopped), and its model.safetensors holds early weights that training will replace.
        if not (run_dir / "results.json").is_file():
            raise ArtifactError(f"{run_dir}: the run has not finished (no results.json): it is still training or was "
                                "stopped; wait for it, or `llm4cdsr train --resume` it, then recommend")
        try:
            model, cfg, info = load_run(run_dir)
        except RunError as e:
            raise ArtifactError(str(e)) from None
        # A run lives in <workspace>/runs/<name>; that beats a relative path recorded at training time.
        ws = Workspace(run_dir.resolve().parent.parent)
        if not (ws.dataset_dir / "meta.json").is_file():
            ws = Workspace(cfg["workspace"])
        dataset = PreparedDataset.load(ws.dataset_dir)
        if info.get("fingerprint") and info["fingerprint"] != dataset_fingerprint(dataset):
            raise ArtifactError(f"{run_dir}: the dataset in {ws.dataset_dir} changed since this run was trained; train again")
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

        Items of the history that the dataset does not know are skipped (the encoder reads ids) and
        listed in the frame's `attrs["unknown_history_ids"]` (and logged); an empty history after
        that is an error. The user_id column is None.
        """
        history = [self._items[str(i)] for i in raw_item_ids if str(i) in self._items]
        unknown = [str(i) for i in raw_item_ids if str(i) not in self._items]
        if not history:
            raise ValueError(f"none of the history's {len(unknown)} item ids is known to this run's dataset")
        if unknown:
            log.warning("history: %d of %d item ids unknown to this run's dataset, left out: %s",
                        len(unknown), len(raw_item_ids), listing(unknown))
        items = self._recommend_many([np.asarray(history, dtype=np.int64)], [None], k, domain, exclude_seen)[0]
        frame = _frame([None] * len(items), items)
        frame.attrs["unknown_history_ids"] = unknown
        return frame

    def recommend_batch(self, user_ids: Iterable[str], k: int = 10, domain: str | None = None, exclude_seen: bool = True,
                        batch_size: int = 512, skip_unknown: bool = False) -> pd.DataFrame:
        """One row per (user, rank), users in the order given: the columns of `COLUMNS`.

        An unknown user is an UnknownUserError, or with `skip_unknown` left out and listed in the
        frame's `attrs["unknown_users"]` (one stray id need not fail a whole batch)."""
        ids = [str(u) for u in user_ids]
        unknown = [u for u in ids if u not in self._users] if skip_unknown else []
        if unknown:
            ids = [u for u in ids if u in self._users]
        index = [self.user_index(u) for u in ids]
        users: list[str] = []
        items: list[dict] = []
        for start in range(0, len(ids), batch_size):
            chunk = index[start:start + batch_size]
            recs = self._recommend_many([self.dataset.sequence(u) for u in chunk], chunk, k, domain, exclude_seen)
            for uid, rows in zip(ids[start:start + batch_size], recs):
                users += [uid] * len(rows)
                items += rows
        frame = _frame(users, items)
        frame.attrs["unknown_users"] = unknown
        return frame

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
        """Make items that were not in training recommendable (inductive scoring); returns how many.

        `items` has item_id, domain, title (and any text columns the embed template uses). Their
        texts are embedded with the run's embedding model and projected with the saved PCA (global,
        and the domain's local PCA). The global part of the score is exact: the global adapter reads
        the PCA vector of any text. The local part needs a vector in the local table's space: with
        frozen PCA tables that is the item's local PCA vector, exactly what a trained row is; with
        learned tables (the default) it is `learned_local_vectors`: a ridge map from the PCA view to
        the learned rows, corrected by the residuals of the item's nearest trained items, so an item
        whose text is a trained item's gets that item's learned row (docs/serving.md: the held-out measure).

        Rows whose id the run already knows, or whose domain is not one of the run's, are left out
        and listed in `self.skipped_new_items` (and logged); an id that is a missing-value marker
        ("nan") or empty is an error.
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
            raise ValueError(f"new items need the columns item_id, domain, title (missing: {', '.join(sorted(missing))}; "
                             f"it has {', '.join(map(str, items.columns))})")
        ids = items["item_id"].astype(str).str.strip()
        bad = ids[(ids == "") | ids.isin(MISSING_MARKERS)]
        if len(bad):
            raise ValueError(f"new items: {len(bad)} row(s) with item_id {bad.iloc[0]!r} (row {int(bad.index[0]) + 1}), "
                             "which is how a missing value is written, not an id")
        items = items.assign(item_id=ids)
        known = items["item_id"].isin(self._items.keys())
        foreign = ~items["domain"].astype(str).isin(self.domains)
        self.skipped_new_items = {"known_id": items.loc[known, "item_id"].tolist(),
                                  "unknown_domain": items.loc[foreign & ~known, "item_id"].tolist()}
        if known.any():
            log.warning("new items: %d id(s) already in the run's dataset left out (scored as trained items): %s",
                        int(known.sum()), listing(self.skipped_new_items["known_id"]))
        if (foreign & ~known).any():
            log.warning("new items: %d row(s) with a domain other than %s left out: %s", int((foreign & ~known).sum()),
                        " / ".join(self.domains), listing(self.skipped_new_items["unknown_domain"]))
        items = items[~known & ~foreign]
        pca = load_file(str(self.workspace.embed_dir / "pca.safetensors"))
        cfg = dict(self.cfg, workspace=str(self.workspace.root))
        embedder = make_embedder(cfg, stage="recommend", progress=False)
        has_local = getattr(self.model, "score_split", None) is not None
        frozen_local = bool(self.cfg["model"].get("freeze_local", True)) and self.cfg["model"].get("local_init") == "pca"
        added = 0
        try:
            for d, name in enumerate(self.domains):
                part = items[items["domain"].astype(str) == name]
                if part.empty:
                    continue
                raw = embedder.embed(item_texts(part, cfg))
                g = project(raw, pca["global.mean"], pca["global.components"])
                local = None
                if has_local:
                    hidden = self.cfg["model"]["hidden"]
                    pca_view = _pad(project(raw, pca[f"local.{name}.mean"], pca[f"local.{name}.components"]), hidden)
                    if frozen_local:
                        local = pca_view
                    else:
                        trained = self._table(d)[1:, self.model.score_split:].numpy()  # (n_d, H) learned rows
                        local = learned_local_vectors(pca_view, _pad(pca[f"local.{name}"][1:], hidden), trained)
                self._new_items[d] = {
                    "global": torch.as_tensor(_pad(g, self.model.global_items.llm_vectors.shape[1])),
                    "local": torch.as_tensor(local) if local is not None else None,
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
        ids, domain = item_sample(self.dataset.n_items, n, seed)  # the sample training's diagnostics measure
        before = items.llm_vectors[torch.as_tensor(ids)]
        after = items.adapter(before)
        return {"before": before.numpy(), "after": after.numpy(), "domain": domain}


def _frame(users: list[str | None], items: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(items, columns=COLUMNS[1:])
    frame.insert(0, "user_id", pd.Series(users, dtype=object))
    return frame.astype({"rank": "int64", "score": "float64", "new": "bool"})


# Inductive local vectors (add_items): ridge strength of the PCA -> learned map, and the
# neighbour weighting of its residuals (softmax over cosine similarity / RESIDUAL_TEMPERATURE among
# the NEIGHBOURS nearest trained items). Chosen on the held-out-items measure (docs/serving.md).
RIDGE = 1.0
NEIGHBOURS = 10
RESIDUAL_TEMPERATURE = 0.005


def learned_local_vectors(pca_view: np.ndarray, trained_pca: np.ndarray, trained_rows: np.ndarray, ridge: float = RIDGE,
                          neighbours: int = NEIGHBOURS, temperature: float | None = RESIDUAL_TEMPERATURE) -> np.ndarray:
    """Local vectors for unseen items under learned local tables: (n, H) from their local PCA
    vectors `pca_view`, given the trained items' PCA vectors (n_d, H) and learned rows (n_d, H).

    A ridge map W (with intercept) from the PCA view to the learned rows carries what training did
    to the whole table; each trained row differs from the map by its own residual, and a new item
    takes the residuals of its nearest trained items in the PCA view, weighted by a sharp softmax
    of cosine similarity (temperature None: the map alone). A text identical to a trained item's
    gets that item's row (its weight is 1 up to the softmax's tail).
    """
    x = np.asarray(trained_pca, dtype=np.float64)
    y = np.asarray(trained_rows, dtype=np.float64)
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    w = np.linalg.solve(xc.T @ xc + ridge * np.eye(x.shape[1]), xc.T @ (y - y_mean))  # (H, H)
    fitted = lambda v: (np.asarray(v, dtype=np.float64) - x_mean) @ w + y_mean
    out = fitted(pca_view)  # (n, H)
    if temperature is not None:
        residuals = y - fitted(x)  # (n_d, H)
        unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        sims = unit(np.asarray(pca_view, dtype=np.float64)) @ unit(x).T  # (n, n_d)
        k = min(neighbours, x.shape[0])
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (n, k)
        near_sims = np.take_along_axis(sims, near, axis=1)
        weights = np.exp((near_sims - near_sims.max(1, keepdims=True)) / temperature)
        weights /= weights.sum(1, keepdims=True)
        out = out + np.einsum("nk,nkh->nh", weights, residuals[near])
    return out.astype(np.float32)


def _pad(x: np.ndarray | None, width: int) -> np.ndarray | None:
    """Zero columns up to `width`: the saved tables keep their width even when PCA fitted fewer."""
    if x is None or x.shape[1] == width:
        return x
    out = np.zeros((x.shape[0], width), dtype=np.float32)
    out[:, : x.shape[1]] = x
    return out
