"""`llm4cdsr report RUN`: an HTML page with PNG plots for one training run.

Plots: training loss and validation curves; per-domain test metrics beside every other run in the
same workspace (the baselines present); metrics by user group; and a 2-D map of item vectors
before and after the global adapter, coloured by domain, with a neighbour-mixing figure that says
in numbers whether the adapter bridges the two domains.
"""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np

from llm4cdsr.io import read_json

log = logging.getLogger(__name__)

DOMAIN_COLOURS = ("#1f77b4", "#ff7f0e")


# ----- reading a run folder --------------------------------------------------------------------
def read_epochs(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _valid_score(row: dict[str, Any], metric: str) -> float | None:
    """An epoch row's validation score (metrics.jsonl: {"valid": {"ndcg@10": ...}, ...})."""
    value = row.get("valid", {}).get(metric)
    return float(value) if value is not None else None


# ----- plots -----------------------------------------------------------------------------------
def plot_curves(epochs: list[dict[str, Any]], metric: str, out: Path) -> Path | None:
    if not epochs:
        return None
    x = [r.get("epoch", i + 1) for i, r in enumerate(epochs)]
    loss = [r.get("train_loss") for r in epochs]
    valid = [_valid_score(r, metric) for r in epochs]
    fig, ax1 = plt.subplots(figsize=(6.4, 3.8))
    ax1.plot(x, loss, "o-", color="#555555", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss")
    ax2 = ax1.twinx()
    if any(v is not None for v in valid):
        ax2.plot(x, valid, "s-", color="#2ca02c", label=f"valid {metric}")
        ax2.set_ylabel(f"valid {metric}")
    lines = ax1.get_lines() + ax2.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    ax1.set_title("Training loss and validation score")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_run_comparison(runs: dict[str, dict], domains: list[str], metric: str, mode: str, out: Path, highlight: str | None = None) -> Path | None:
    """Grouped bars: one group per slice (overall, A, B), one bar per run."""
    names = [n for n, r in runs.items() if r.get("test", {}).get(mode)]
    if not names:
        return None
    slices = ["overall"] + domains
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(names) + 3), 4))
    for j, name in enumerate(names):
        vals = [runs[name]["test"][mode].get(s, {}).get(metric, np.nan) for s in slices]
        bars = ax.bar(np.arange(len(slices)) + j * width, vals, width, label=name,
                      edgecolor="black" if name == highlight else None, linewidth=1.5 if name == highlight else 0)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(np.arange(len(slices)) + width * (len(names) - 1) / 2, slices)
    ax.set_ylabel(f"test {metric} ({mode})")
    ax.set_title(f"Test {metric}, {mode} protocol, by domain")
    ax.legend(fontsize=7, ncol=2)
    ax.margins(y=0.2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_groups(groups: dict[str, dict[str, dict[str, float]]], metric: str, out: Path) -> Path | None:
    """One panel per grouping (overlap, history length, target popularity); bars per group value."""
    groupings = {g: v for g, v in groups.items() if isinstance(v, dict) and v}
    if not groupings:
        return None
    fig, axes = plt.subplots(1, len(groupings), figsize=(4.2 * len(groupings), 3.6), squeeze=False)
    for ax, (grouping, values) in zip(axes[0], groupings.items()):
        labels = list(values)
        vals = [values[k].get(metric, np.nan) if isinstance(values[k], dict) else np.nan for k in labels]
        counts = [values[k].get("users") if isinstance(values[k], dict) else None for k in labels]
        bars = ax.bar(range(len(labels)), vals, color="#9467bd")
        ax.bar_label(bars, labels=[f"{v:.3f}" + (f"\nn={c}" if c else "") for v, c in zip(vals, counts)], fontsize=7)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(grouping.replace("_", " "))
        ax.margins(y=0.25)
    axes[0][0].set_ylabel(f"test {metric}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cross_domain_neighbours(vectors: np.ndarray, domain: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's k nearest neighbours (cosine) that come from the other domain.

    0 means the domains live apart; bridged domains put related items of both side by side.
    """
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(vectors) - 1)
    index = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(vectors)
    _, nbrs = index.kneighbors(vectors)
    other = domain[nbrs[:, 1:]] != domain[:, None]  # (n, k), the item itself dropped
    return float(other.mean())


def plot_item_map(before: np.ndarray, after: np.ndarray, domain: np.ndarray, domains: list[str], out: Path, seed: int = 0) -> tuple[Path, dict[str, float]]:
    """t-SNE of item vectors before and after the adapter, coloured by domain."""
    from sklearn.manifold import TSNE

    figures = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (label, vecs) in zip(axes, [("before the adapter (LLM vectors)", before), ("after the adapter", after)]):
        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30, max_iter=500).fit_transform(vecs.astype(np.float32))
        mix = cross_domain_neighbours(vecs, domain)
        figures[label.split(" (")[0]] = mix
        for d, name in enumerate(domains):
            m = domain == d
            ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.6, color=DOMAIN_COLOURS[d], label=f"{name} ({m.sum()})")
        ax.set_title(f"{label}\nneighbours from the other domain: {mix:.1%}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(markerscale=3, fontsize=8)
    fig.suptitle("Item vectors, t-SNE: are the two domains bridged?")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out, figures


# ----- the page ---------------------------------------------------------------------------------
def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _run_label(run_dir: Path, results: dict) -> str:
    model = results.get("model") or results.get("model_name")
    return f"{run_dir.name}" if not model or model in run_dir.name else f"{run_dir.name} ({model})"


def write_report(run_dir: str | Path, metric: str = "ndcg@10", item_map: dict[str, np.ndarray] | None = None) -> Path:
    """Write `<run_dir>/report/index.html` and its PNGs; return the HTML path.

    `item_map`, when given, holds "before", "after" and "domain" arrays for a sample of items.
    """
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path}: no results; train and evaluate the run first")
    results = read_json(results_path)
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    domains = list(results.get("dataset", {}).get("domains") or [])

    # Every finished run beside this one (same workspace) is a point of comparison.
    runs: dict[str, dict] = {}
    for other in sorted(run_dir.parent.iterdir()):
        r = other / "results.json"
        if r.is_file():
            try:
                runs[_run_label(other, read_json(r))] = read_json(r)
            except (OSError, ValueError) as e:
                log.warning("skipping %s: %s", r, e)
    this_label = _run_label(run_dir, results)

    sections: list[str] = []
    pictures: list[tuple[str, Path | None]] = [
        ("Training curves", plot_curves(read_epochs(run_dir), metric, out / "curves.png")),
    ]
    for mode in ("sampled", "full"):
        pictures.append((f"Per-domain test {metric} ({mode}) against the runs present",
                         plot_run_comparison(runs, domains, metric, mode, out / f"domains_{mode}.png", highlight=this_label)))
    groups = results.get("test", {}).get("sampled", {}).get("groups", {})
    pictures.append((f"Test {metric} by user group", plot_groups(groups, metric, out / "groups.png")))
    mixing = None
    if item_map is not None:
        path, mixing = plot_item_map(item_map["before"], item_map["after"], item_map["domain"], domains, out / "item_map.png")
        pictures.append(("Item vectors before and after the adapter", path))

    rows = []
    for name, r in runs.items():
        for mode in ("sampled", "full"):
            t = r.get("test", {}).get(mode)
            if not t:
                continue
            rows.append([name, mode] + [f"{t.get(s, {}).get(m, float('nan')):.4f}" for s in ["overall"] + domains for m in ("hit@10", "ndcg@10")])
    header = ["run", "protocol"] + [f"{s} {m}" for s in ["overall"] + domains for m in ("hit@10", "ndcg@10")]
    sections.append("<h2>Test results of the runs in this workspace</h2>" + _table(rows, header))
    for title, path in pictures:
        if path is not None:
            sections.append(f"<h2>{html.escape(title)}</h2><img src='{path.name}' alt='{html.escape(title)}'>")
    if mixing:
        sections.append("<p>Share of each item's 10 nearest neighbours (cosine) that belong to the other domain "
                        "(0 = the domains live apart): " + ", ".join(f"{k}: {v:.1%}" for k, v in mixing.items()) + "</p>")
    best = results.get("best_epoch")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>llm4cdsr report: {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style>
</head><body><h1>Run {html.escape(run_dir.name)}</h1>
<p>Model: {html.escape(str(results.get('model') or results.get('model_name') or '?'))}; best epoch (on validation): {html.escape(str(best))}.
Test figures are of the best-on-validation weights; the test set never chose anything.</p>
{''.join(sections)}
</body></html>"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    if mixing:
        (out / "domain_mixing.json").write_text(json.dumps(mixing, indent=2), encoding="utf-8")
    return index
