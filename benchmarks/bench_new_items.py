"""New items under learned local tables: the copy test and the held-out-items test.

    python benchmarks/bench_new_items.py [--users 1000] [--epochs 10] [--out DIR]

A generated world; 5% of its items (seeded) are hidden from one model's training (their
interactions removed before `prepare`) and trained in another's. For every user whose test target
is a hidden item, both models rank that target, after the user's history, among their target
domain's items: the full model as a trained item, the hidden model as an item added with
`add_items` (its hidden history items are unknown to it and left out). The inductive local vector
is computed by each variant below; `global only` is what `add_items` did before (no local part).
The copy test: a known item's text under a new id, its score and rank against the original's.
Prints a table (mean rank, MRR, hit@10 over those users).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import llm4cdsr.recommender as recommender
from llm4cdsr.cli import main
from llm4cdsr.data.synth import generate_world
from llm4cdsr.recommender import TrainedRecommender


def _train(ws: Path, interactions: pd.DataFrame, items: pd.DataFrame, epochs: int) -> Path:
    ws.mkdir(parents=True)
    interactions.to_csv(ws / "inter.csv", index=False)
    items.to_csv(ws / "items.csv", index=False)
    assert main(["run", "-w", str(ws), f"data.interactions={ws / 'inter.csv'}", f"data.items={ws / 'items.csv'}",
                 f"train.epochs={epochs}", "train.progress=false", "model.beta=0", "run.stages=[prepare,embed,train]",
                 "run.baselines=[]", "run.name=m"]) == 0
    return ws / "runs" / "m"


def _ranks(rec: TrainedRecommender, cases: list[tuple[list[str], str, str]]) -> np.ndarray:
    out = []
    for history, target, domain in cases:
        recs = rec.recommend_history(history, k=100_000, domain=domain)
        hits = np.flatnonzero(recs["item_id"].to_numpy() == target)
        out.append(int(recs["rank"].iloc[hits[0]]) if hits.size else len(recs) + 1)
    return np.asarray(out)


def knn_mean(view, pca, rows, k=10, temperature=0.05):
    """The other candidate: the similarity-weighted mean of the k nearest trained items' rows."""
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = unit(view) @ unit(pca).T
    near = np.argsort(-sims, axis=1)[:, :k]
    w = np.exp((np.take_along_axis(sims, near, 1) - 1) / temperature)
    w /= w.sum(1, keepdims=True)
    return np.einsum("nk,nkh->nh", w, rows[near]).astype(np.float32)


BASE = recommender.learned_local_vectors
VARIANTS = {
    "ridge map only": lambda v, p, r: BASE(v, p, r, temperature=None),
    "10-NN mean (softmax t 0.05)": knn_mean,
    "ridge + NN residuals, t 0.005": lambda v, p, r: BASE(v, p, r, temperature=0.005),
    "ridge + NN residuals, t 0.02": lambda v, p, r: BASE(v, p, r, temperature=0.02),
    "ridge + NN residuals, t 0.1": lambda v, p, r: BASE(v, p, r, temperature=0.1),
}


def main_(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--share", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-new-items-"))
    interactions, items = generate_world(n_users=args.users, n_items=(args.users // 5, args.users * 3 // 10), seed=0)
    rng = np.random.default_rng(0)
    hidden = set(rng.choice(items["item_id"].to_numpy(), size=int(round(args.share * len(items))), replace=False))
    full_run = _train(root / "full", interactions, items, args.epochs)
    kept = interactions[~interactions["item_id"].isin(hidden)]
    hidden_run = _train(root / "hidden", kept, items[~items["item_id"].isin(hidden)], args.epochs)

    full = TrainedRecommender.load(full_run)
    cases = []
    for u in range(full.dataset.n_users):
        seq = full.dataset.items["raw_id"].to_numpy()[full.dataset.sequence(u) - 1]
        if seq[-1] in hidden:
            dom = full.dataset.items["domain"].iloc[full.dataset.sequence(u)[-1] - 1]
            cases.append((list(seq[:-1]), str(seq[-1]), str(dom)))
    new = items[items["item_id"].isin(hidden)]
    rows = [("trained (the full model)", _ranks(full, cases))]
    for name in ["global only (before)", *VARIANTS]:
        rec = TrainedRecommender.load(hidden_run)
        recommender.learned_local_vectors = VARIANTS.get(name, BASE)
        try:
            rec.add_items(new)
        finally:
            recommender.learned_local_vectors = BASE
        if name == "global only (before)":  # what add_items did under learned tables: no local part
            for entry in rec._new_items.values():
                entry["local"] = None
        rows.append((name, _ranks(rec, cases)))
    print(f"held-out items: {len(hidden)} of {len(items)} hidden; {len(cases)} users whose test target is one; "
          f"{args.users} users, {args.epochs} epochs")
    print(f"{'local vector of a new item':<34} {'mean rank':>10} {'MRR':>7} {'hit@10':>7}")
    for name, r in rows:
        print(f"{name:<34} {r.mean():>10.1f} {np.mean(1 / r):>7.4f} {np.mean(r <= 10):>7.4f}")

    # The copy test on the full model: item 10's text under a new id.
    rec = TrainedRecommender.load(full_run)
    row = rec.dataset.items.iloc[10]
    copy = pd.DataFrame([{**row.to_dict(), "item_id": "copy"}]).drop(columns=["global_id", "local_id", "raw_id"])
    rec.add_items(copy)
    user = rec.dataset.user_ids[7]
    recs = rec.recommend(user, k=100_000, domain=row["domain"], exclude_seen=False).set_index("item_id")
    print(f"copy test (user {user}): original score {recs.loc[row['raw_id'], 'score']:.4f} rank "
          f"{recs.loc[row['raw_id'], 'rank']}; copy {recs.loc['copy', 'score']:.4f} rank {recs.loc['copy', 'rank']}")


if __name__ == "__main__":
    main_()
