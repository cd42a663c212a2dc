"""Experiments built on the training entry point. `overlap`: the paper's overlap dilemma, measured.

For each ratio r, keep a seeded share r of the users whose training history has both domains; every
other such user keeps only their majority domain in training (the domain with more training items;
a tie goes to the domain of their most recent training item). Validation and test targets, the test
users and the sampled candidates stay the same, so every ratio and model is scored on one test set.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from llm4cdsr.config import apply_overrides
from llm4cdsr.data.dataset import PreparedDataset, Split
from llm4cdsr.io import read_json, write_json
from llm4cdsr.training.metrics import paired_tests

log = logging.getLogger("llm4cdsr.experiment")


def subsample_indices(n_users: int, n: int, seed: int) -> np.ndarray:
    """The sorted user indices `subsample_users` keeps (all of them when n <= 0 or n >= n_users)."""
    if n <= 0 or n >= n_users:
        return np.arange(n_users)
    return np.sort(np.random.default_rng(seed).choice(n_users, size=n, replace=False))


def subsample_users(dataset: PreparedDataset, n_users: int, seed: int) -> PreparedDataset:
    """A seeded subset of users (all items kept, so ids and LLM artifacts stay valid)."""
    if n_users <= 0 or n_users >= dataset.n_users:
        return dataset
    keep = subsample_indices(dataset.n_users, n_users, seed)
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
            "training_items_dropped": int((~keep_row).sum()), "reduced_users": reduced}
    return Split(offsets, split.train_items[keep_row], split.valid_target, split.test_target), info


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """`LABEL[:KEY=VALUE:...]` -> (label, overrides). A bare model name is that model; a label with
    overrides and no model.name is the config's model with those overrides (e.g.
    `cosine:model.align=cosine`)."""
    label, *overrides = [part.strip() for part in spec.split(":")]
    if not label or any("=" not in o for o in overrides):
        raise ValueError(f"--models entry {spec!r}: expected LABEL or LABEL:section.key=value[:...]")
    return label, overrides


def variant_config(cfg: dict, label: str, overrides: list[str], seed: int) -> dict:
    from llm4cdsr.models import MODEL_NAMES

    base = [f"model.name={label}"] if label in MODEL_NAMES and not any(o.startswith("model.name=") for o in overrides) else []
    return apply_overrides(cfg, [*base, *overrides, f"seed={seed}"], f"--models {label}")


def run_overlap(cfg: dict, ratios: list[float], models: list[str], out_dir: Path, dataset: PreparedDataset,
                item_vectors=None, users: int = 0, profiles: np.ndarray | None = None,
                seeds: list[int] | None = None) -> pd.DataFrame:
    """Train every model (a name, or `LABEL:KEY=VALUE:...`) at every ratio with every seed, then
    write results.csv, results.md (mean +- std over seeds) and overlap.png of every finished run in
    out_dir, this call's and earlier calls' (other ratios, models or seeds) alike.

    The user sample and the choice of who keeps both domains are drawn with cfg["seed"], whatever
    the training seeds, so every model and seed at a ratio sees the same data. Profiles (models
    with beta > 0) guide only users whose training history was not cut: a cut user's profile was
    made from both domains and would leak the removed one, so that user trains without guidance.
    """
    from llm4cdsr.models import model_needs
    from llm4cdsr.training.run import train_run

    seeds = seeds or [cfg["seed"]]
    variants = [parse_variant(spec) for spec in models]
    configs = {label: variant_config(cfg, label, overrides, seeds[0]) for label, overrides in variants}
    if any("profiles" in model_needs(c["model"]) for c in configs.values()) and profiles is None:
        raise ValueError("a model with beta > 0 needs the workspace's profile embeddings (run `llm4cdsr profile`), or set model.beta=0")
    keep = subsample_indices(dataset.n_users, users, cfg["seed"])
    dataset = subsample_users(dataset, users, cfg["seed"])
    split = dataset.split()
    out_dir.mkdir(parents=True, exist_ok=True)
    for ratio in ratios:
        reduced, info = reduce_overlap(dataset, split, ratio, cfg["seed"])
        cut = info.pop("reduced_users")
        guided = None
        if profiles is not None:
            guided = np.asarray(profiles, dtype=np.float32)[keep].copy()
            guided[cut] = np.nan  # no guidance for the users cut back to one domain
        log.info("overlap %.2f: %d of %d overlapping users keep both domains (%d training items dropped)",
                 ratio, info["kept_both"], info["overlap_users"], info["training_items_dropped"])
        for seed in seeds:
            for label, overrides in variants:
                run_cfg = variant_config(cfg, label, overrides, seed)
                needs = model_needs(run_cfg["model"])
                run_dir = out_dir / "runs" / f"{label}-overlap{ratio:g}-seed{seed}"
                resume = (run_dir / "checkpoint.pt").is_file() or (run_dir / "results.json").is_file()
                train_run(run_cfg, run_dir, dataset, split=reduced, item_vectors=item_vectors if "item_vectors" in needs else None,
                          profiles=guided if "profiles" in needs else None, resume=resume)
                write_json(run_dir / OVERLAP_INFO, {"ratio": ratio, "model": label, "seed": seed, "users": dataset.n_users,
                                                    "draw_seed": cfg["seed"], **info})
    return write_overlap_outputs(out_dir, dataset.domains)


OVERLAP_INFO = "overlap.json"
# The model every other is t-tested against at each share: the preset, under its plain name.
REFERENCE = "llm4cdsr"


def collect_overlap(out_dir: Path, domains) -> pd.DataFrame:
    """One row per (finished run, protocol) of out_dir/runs, whatever call made it: ratio, model,
    seed, what the cut removed, and the test metrics (overall, per domain, by domains in history)."""
    rows = []
    for run_dir in sorted((Path(out_dir) / "runs").glob("*")):
        if not (run_dir / OVERLAP_INFO).is_file() or not (run_dir / "results.json").is_file():
            continue
        info, results = read_json(run_dir / OVERLAP_INFO), read_json(run_dir / "results.json")
        for mode in ("sampled", "full"):
            block = results["test"][mode]
            row = {**info, "mode": mode, "best_epoch": results["best_epoch"]}
            for part in ("overall", *domains):
                for metric in ("hit@10", "ndcg@10"):
                    row[f"{part} {metric}"] = block[part][metric]
            for group, values in block.get("groups", {}).get("domains_in_history", {}).items():
                row[f"{group} ndcg@10"] = values["ndcg@10"]
            rows.append(row)
    return pd.DataFrame(rows).sort_values(["ratio", "model", "seed", "mode"], kind="stable").reset_index(drop=True)


def overlap_tests(out_dir: Path, reference: str = REFERENCE, metric: str = "ndcg@10") -> pd.DataFrame:
    """At each ratio, every model against `reference` at the same ratio: a paired t-test of per-user
    test `metric` (each model's per-user mean over its seeds), both protocols. Runs without per-user
    ranks (ranks.parquet) are left out; a ratio without the reference gets no rows."""
    runs: dict[tuple[float, str], list[Path]] = {}
    for run_dir in sorted((Path(out_dir) / "runs").glob("*")):
        if (run_dir / OVERLAP_INFO).is_file() and (run_dir / "ranks.parquet").is_file():
            info = read_json(run_dir / OVERLAP_INFO)
            runs.setdefault((float(info["ratio"]), info["model"]), []).append(run_dir)
    rows = []
    for ratio in sorted({r for r, _ in runs}):
        groups = {model: dirs for (r, model), dirs in sorted(runs.items()) if r == ratio}
        if reference not in groups:
            continue
        tests = {mode: paired_tests(groups, reference, metric, mode) for mode in ("sampled", "full")}
        for model in groups:
            if model != reference:
                rows.append({"ratio": ratio, "model": model, "reference": reference, "seeds": len(groups[model]),
                             **{f"{mode} {k}": tests[mode].get(model, (np.nan, np.nan))[i]
                                for mode in ("sampled", "full") for i, k in enumerate(("diff", "p"))}})
    return pd.DataFrame(rows, columns=["ratio", "model", "reference", "seeds", "sampled diff", "sampled p", "full diff", "full p"])


def tests_markdown(tests: pd.DataFrame, metric: str = "ndcg@10") -> str:
    if tests.empty:
        return ""
    reference = tests["reference"].iloc[0]
    lines = [f"Paired t-tests of per-user test {metric} (each model's mean over its seeds) against {reference} at the same share:",
             "", "| overlap kept | model | seeds | sampled diff | p | full diff | p |", "|---|---|---|---|---|---|---|"]
    for row in tests.itertuples(index=False):
        cells = [f"{row.ratio:g}", row.model, str(row.seeds)]
        for diff, p in ((row[4], row[5]), (row[6], row[7])):
            # Identical models (no pair to align at share 0) have no difference to test.
            cells += ["-", "-"] if np.isnan(p) else [f"{diff:+.4f}", f"{p:.2g}" if p > 0 else "<1e-300"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_overlap_outputs(out_dir: Path, domains) -> pd.DataFrame:
    """results.csv, results.md (mean +- std over seeds, then the t-tests against the preset),
    tests.csv and overlap.png of every finished run in out_dir."""
    table = collect_overlap(out_dir, domains)
    table.to_csv(out_dir / "results.csv", index=False)
    write_json(out_dir / "experiment.json", {"ratios": sorted(set(table["ratio"])), "models": sorted(set(table["model"])),
                                             "seeds": sorted(set(table["seed"])), "domains": list(domains)})
    tests = overlap_tests(out_dir)
    tests.to_csv(out_dir / "tests.csv", index=False)
    text = markdown_table(table, domains)
    if not tests.empty:
        text += "\n" + tests_markdown(tests)
    (out_dir / "results.md").write_text(text, encoding="utf-8")
    plot_overlap(table, domains, out_dir / "overlap.png")
    return table


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()  # a group with no user at this share (no one keeps both domains at 0)
    if values.empty:
        return "-"
    return f"{values.mean():.4f}" if len(values) < 2 else f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def markdown_table(table: pd.DataFrame, domains) -> str:
    """Mean (± std over seeds, where several) per ratio and model, sampled protocol, with full
    ranking's overall ndcg@10 and the two user groups (one domain / both in the history)."""
    cols = ["overall ndcg@10", "overall hit@10"] + [f"{d} ndcg@10" for d in domains]
    groups = [c for c in table.columns if c.endswith(" ndcg@10") and c.split(" ")[0] not in ("overall", *domains)]
    lines = ["| overlap kept | model | seeds | " + " | ".join(f"sampled {c}" for c in cols + groups) + " | full overall ndcg@10 |",
             "|---|---|---|" + "---|" * (len(cols) + len(groups) + 1)]
    for (ratio, model), group in table.groupby(["ratio", "model"], sort=True):
        sampled, full = group[group["mode"] == "sampled"], group[group["mode"] == "full"]
        cells = " | ".join(_mean_std(sampled[c]) for c in cols + groups)
        lines.append(f"| {ratio:g} | {model} | {len(sampled)} | {cells} | {_mean_std(full['overall ndcg@10'])} |")
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
            stats = group.groupby("ratio")[f"{part} ndcg@10"].agg(["mean", "std"]).fillna(0.0)  # over seeds
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], fmt="o-", capsize=3, label=name)
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
