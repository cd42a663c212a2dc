"""Experiments built on the training entry point. `overlap`: the paper's overlap dilemma, measured.

For each ratio r, keep a seeded share r of the users whose training history has both domains; every
other such user keeps only their majority domain in training (the domain with more training items;
a tie goes to the domain of their most recent training item). Validation and test targets, the test
users and the sampled candidates stay the same, so every ratio and model is scored on one test set.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from llm4cdsr.data.dataset import PreparedDataset, Split
from llm4cdsr.io import write_json

log = logging.getLogger("llm4cdsr.experiment")


def subsample_users(dataset: PreparedDataset, n_users: int, seed: int) -> PreparedDataset:
    """A seeded subset of users (all items kept, so ids and LLM artifacts stay valid)."""
    if n_users <= 0 or n_users >= dataset.n_users:
        return dataset
    keep = np.sort(np.random.default_rng(seed).choice(dataset.n_users, size=n_users, replace=False))
    lengths = dataset.lengths[keep]
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rows = np.concatenate([np.arange(dataset.seq_offsets[u], dataset.seq_offsets[u + 1]) for u in keep])
    meta = dict(dataset.meta, subsample={"users": int(n_users), "seed": int(seed), "of": int(dataset.n_users)})
    return PreparedDataset(dataset.domains, dataset.n_items, dataset.items, dataset.user_ids[keep], offsets,
                           dataset.seq_items[rows], None if dataset.seq_times is None else dataset.seq_times[rows], meta)


def overlap_users(dataset: PreparedDataset, split: Split) -> np.ndarray:
    """Indices of users whose TRAINING history holds both domains."""
    user_of = np.repeat(np.arange(dataset.n_users), split.train_lengths)
    has = np.zeros((dataset.n_users, 2), dtype=bool)
    has[user_of, dataset.domain_of(split.train_items)] = True
    return np.flatnonzero(has.all(axis=1))


def reduce_overlap(dataset: PreparedDataset, split: Split, ratio: float, seed: int) -> tuple[Split, dict]:
    """The split with only `ratio` of the overlapping users keeping both domains in training."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"overlap ratio must lie in [0, 1], got {ratio}")
    both = overlap_users(dataset, split)
    n_keep = int(round(ratio * len(both)))
    kept = np.random.default_rng(seed).permutation(both)[:n_keep]
    reduced = np.setdiff1d(both, kept)

    user_of = np.repeat(np.arange(dataset.n_users), split.train_lengths)
    dom = dataset.domain_of(split.train_items).astype(np.int64)
    counts = np.zeros((dataset.n_users, 2), dtype=np.int64)
    np.add.at(counts, (user_of, dom), 1)
    last_domain = dom[split.train_offsets[1:] - 1]  # domain of each user's most recent training item
    majority = np.where(counts[:, 0] > counts[:, 1], 0, np.where(counts[:, 1] > counts[:, 0], 1, last_domain))

    drop = np.zeros(dataset.n_users, dtype=bool)
    drop[reduced] = True
    keep_row = ~drop[user_of] | (dom == majority[user_of])
    new_lengths = np.bincount(user_of[keep_row], minlength=dataset.n_users)
    offsets = np.zeros(dataset.n_users + 1, dtype=np.int64)
    np.cumsum(new_lengths, out=offsets[1:])
    info = {"ratio": ratio, "overlap_users": len(both), "kept_both": int(n_keep),
            "training_items_dropped": int((~keep_row).sum())}
    return Split(offsets, split.train_items[keep_row], split.valid_target, split.test_target), info


def run_overlap(cfg: dict, ratios: list[float], models: list[str], out_dir: Path, dataset: PreparedDataset,
                item_vectors=None, users: int = 0) -> pd.DataFrame:
    """Train every model at every ratio; write results.csv, results.md and overlap.png into out_dir."""
    from llm4cdsr.models import model_needs
    from llm4cdsr.training.run import train_run

    if any("profiles" in model_needs(dict(cfg["model"], name=name)) for name in models):
        # Profiles are made from the full training histories: a user reduced to one domain would
        # still carry the other domain in their profile, which is what the experiment removes.
        raise ValueError("the overlap experiment trains without user profiles (they would leak the removed domain): set model.beta=0")
    dataset = subsample_users(dataset, users, cfg["seed"])
    split = dataset.split()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for ratio in ratios:
        reduced, info = reduce_overlap(dataset, split, ratio, cfg["seed"])
        log.info("overlap %.2f: %d of %d overlapping users keep both domains (%d training items dropped)",
                 ratio, info["kept_both"], info["overlap_users"], info["training_items_dropped"])
        for name in models:
            run_cfg = copy.deepcopy(cfg)
            run_cfg["model"]["name"] = name
            needs = model_needs(run_cfg["model"])
            run_dir = out_dir / "runs" / f"{name}-overlap{ratio:g}"
            resume = (run_dir / "checkpoint.pt").is_file() or (run_dir / "results.json").is_file()
            results = train_run(run_cfg, run_dir, dataset, split=reduced,
                                item_vectors=item_vectors if "item_vectors" in needs else None, resume=resume)
            for mode in ("sampled", "full"):
                block = results["test"][mode]
                row = {"ratio": ratio, "model": name, "mode": mode, "best_epoch": results["best_epoch"], **info}
                for part in ("overall", *dataset.domains):
                    for metric in ("hit@10", "ndcg@10"):
                        row[f"{part} {metric}"] = block[part][metric]
                rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "results.csv", index=False)
    write_json(out_dir / "experiment.json", {"ratios": ratios, "models": models, "users": dataset.n_users,
                                             "domains": list(dataset.domains)})
    (out_dir / "results.md").write_text(markdown_table(table, dataset.domains), encoding="utf-8")
    plot_overlap(table, dataset.domains, out_dir / "overlap.png")
    return table


def markdown_table(table: pd.DataFrame, domains) -> str:
    cols = ["overall ndcg@10", "overall hit@10"] + [f"{d} ndcg@10" for d in domains]
    lines = ["| overlap kept | model | " + " | ".join(f"sampled {c}" for c in cols) + " | full overall ndcg@10 |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    sampled = table[table["mode"] == "sampled"].set_index(["ratio", "model"])
    full = table[table["mode"] == "full"].set_index(["ratio", "model"])
    for key, row in sampled.iterrows():
        cells = " | ".join(f"{row[c]:.4f}" for c in cols)
        lines.append(f"| {key[0]:g} | {key[1]} | {cells} | {full.loc[key, 'overall ndcg@10']:.4f} |")
    return "\n".join(lines) + "\n"


def plot_overlap(table: pd.DataFrame, domains, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = ["overall", *domains]
    fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts), 3.6), squeeze=False)
    sampled = table[table["mode"] == "sampled"]
    for ax, part in zip(axes[0], parts):
        for name, group in sampled.groupby("model"):
            group = group.sort_values("ratio")
            ax.plot(group["ratio"], group[f"{part} ndcg@10"], "o-", label=name)
        ax.set_title(f"{part}")
        ax.set_xlabel("share of overlapping users kept")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test ndcg@10 (sampled)")
    axes[0][0].legend()
    fig.suptitle("The overlap dilemma: accuracy against the share of users with both domains")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
