"""`llm4cdsr report RUN`: an HTML page with PNG plots for one training run.

From the top: what the data is (source, real or synthetic, users, items and interactions per
domain, overlap); the test results of every run in the workspace (the popularity baseline that
`llm4cdsr run` trains beside the model among them), in both protocols; per-domain charts against
those runs; training curves; metrics by user group; and a 2-D map of item vectors before and after
the global adapter, with the share of cross-domain neighbours said in words. Every chart and table
names its protocol, and every section says in one sentence what to look for.

`report/meta.json` records what the page was made from; `llm4cdsr run` skips the report when that
is unchanged (`report_is_current`).
"""
from __future__ import annotations

import hashlib
import html
import json
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from llm4cdsr.data.dataset import SYNTHETIC_NOTE  # noqa: E402
from llm4cdsr.io import ArtifactError, atomic_dir, check_folder, damaged, read_json, read_yaml, write_json  # noqa: E402
from llm4cdsr.recommender import TrainedRecommender  # noqa: E402
from llm4cdsr.training.diagnostics import chance_share, cross_domain_neighbours  # noqa: E402,F401

log = logging.getLogger(__name__)

# Bump when the page changes, so that `llm4cdsr run` rewrites reports made by older code.
REPORT_VERSION = 2
DOMAIN_COLOURS = ("#1f77b4", "#ff7f0e")
THIS_RUN, OTHER_RUN = "#1f77b4", "#b0b0b0"
MAX_CHART_RUNS = 12  # bars per chart; the table lists every run
DPI = 110


# ----- reading a run folder --------------------------------------------------------------------
def read_epochs(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except ValueError as e:  # a line cut by a kill or a full disk
        raise damaged(path, e) from None


def _valid_score(row: dict[str, Any], metric: str) -> float | None:
    """An epoch row's validation score (metrics.jsonl: {"valid": {"ndcg@10": ...}, ...})."""
    value = row.get("valid", {}).get(metric)
    return float(value) if value is not None else None


def _run_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    return (read_yaml(path) or {}) if path.is_file() else {}


def dataset_summary(run_dir: Path, results: dict) -> dict[str, Any]:
    """What the run was trained and tested on, from its workspace's dataset/meta.json and stats.json."""
    folder = run_dir.resolve().parent.parent / "dataset"
    meta = read_json(folder / "meta.json") if (folder / "meta.json").is_file() else {}
    stats = read_json(folder / "stats.json") if (folder / "stats.json").is_file() else {}
    source = meta.get("source", {})
    files = [Path(f).name for f in source.get("files", []) if f]
    return {
        "domains": list(results.get("dataset", {}).get("domains") or meta.get("domains") or []),
        "synthetic": bool(meta.get("synthetic", results.get("dataset", {}).get("synthetic", False))),
        "format": source.get("format", "?"),
        "files": files,
        "stats": stats,
    }


# ----- protocols ---------------------------------------------------------------------------------
def protocol_short(mode: str, num_negatives: int) -> str:
    """The protocol as a chart title names it."""
    if mode == "sampled":
        return f"sampled protocol: target + {num_negatives} negatives"
    return "full ranking: every item of the target's domain"


def protocol_long(mode: str, num_negatives: int, items: dict[str, int] | None = None) -> str:
    if mode == "sampled":
        return (f"sampled: the target is ranked among {num_negatives} items drawn at random from its domain "
                "(outside the user's history), drawn once and shared by every run")
    sizes = f" ({', '.join(f'{d} {n:,}' for d, n in items.items())} items)" if items else ""
    return f"full: the target is ranked among every item of its domain{sizes}, the user's other history items left out"


# ----- plots -----------------------------------------------------------------------------------
def plot_curves(epochs: list[dict[str, Any]], metric: str, out: Path, protocol: str = "",
                best_epoch: int | None = None) -> Path | None:
    """Two panels side by side (no legend to cover anything): train loss, and the validation score."""
    if not epochs:
        return None
    x = [r.get("epoch", i + 1) for i, r in enumerate(epochs)]
    loss = [r.get("train_loss") for r in epochs]
    valid = [_valid_score(r, metric) for r in epochs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    ax1.plot(x, loss, "o-", color="#555555", markersize=4)
    ax1.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    if any(v is not None for v in valid):
        ax2.plot(x, valid, "s-", color="#2ca02c", markersize=4)
    ax2.set(xlabel="epoch", ylabel=f"valid {metric}", title=f"Validation {metric}" + (f"\n({protocol})" if protocol else ""))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        if best_epoch:
            ax.axvline(best_epoch, color="#d62728", linestyle="--", linewidth=1)
    if best_epoch:
        ax2.annotate(f"best epoch {best_epoch}: weights kept", xy=(best_epoch, 0.02), xycoords=("data", "axes fraction"),
                     xytext=(4, 0), textcoords="offset points", fontsize=8, color="#d62728")
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def plot_run_comparison(runs: dict[str, dict], domains: list[str], metric: str, mode: str, out: Path,
                        highlight: str | None = None, protocol: str = "") -> Path | None:
    """One panel per slice (overall, then each domain), one horizontal bar per run, the run names
    on the axis (readable, and no legend over the bars); `highlight` in colour, the others grey."""
    names = [n for n, r in runs.items() if r.get("test", {}).get(mode)]
    if not names:
        return None
    slices = ["overall"] + domains
    height = max(2.2, 0.38 * len(names) + 1.4)
    fig, axes = plt.subplots(1, len(slices), figsize=(11, height), sharey=True, layout="constrained", squeeze=False)
    y = np.arange(len(names))
    for ax, part in zip(axes[0], slices):
        vals = np.array([runs[n]["test"][mode].get(part, {}).get(metric, np.nan) for n in names], dtype=float)
        colours = [THIS_RUN if n == highlight else OTHER_RUN for n in names]
        bars = ax.barh(y, vals, color=colours)
        ax.bar_label(bars, fmt="%.4f", fontsize=8, padding=2)
        top = np.nanmax(vals) if np.isfinite(vals).any() else 1.0
        ax.set_xlim(0, top * 1.3 if top > 0 else 1)
        ax.set_title(part, fontsize=10)
        ax.set_xlabel(f"test {metric}")
        ax.xaxis.set_major_locator(MaxNLocator(4))  # few ticks: neighbouring panels' labels never touch
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, names, fontsize=9)
    axes[0][0].invert_yaxis()  # the first run on top
    fig.suptitle(f"Test {metric} by target domain ({protocol or mode})", fontsize=11)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


GROUP_TITLES = {"domains_in_history": "domains in the user's training history",
                "history_length": "training history length (items)",
                "target_popularity": "target item's training interactions"}


def _group_label(grouping: str, label: str) -> str:
    """'len6-10' -> '6-10', 'pop>50' -> '>50', 'both' -> 'both domains'."""
    if grouping == "domains_in_history":
        return {"both": "both domains", "one": "one domain"}.get(label, label)
    for prefix in ("len", "pop"):
        if label.startswith(prefix):
            rest = label[len(prefix):]
            return "0" if rest == "<=0" else rest.replace("<=", "≤ ").replace(">", "> ")
    return label


def plot_groups(groups: dict[str, dict[str, dict[str, float]]], metric: str, out: Path, protocol: str = "") -> Path | None:
    """One panel per grouping; a horizontal bar per group, labelled on the axis, with its user count."""
    groupings = {g: v for g, v in groups.items() if isinstance(v, dict) and v}
    if not groupings:
        return None
    rows = max(len(v) for v in groupings.values())
    fig, axes = plt.subplots(1, len(groupings), figsize=(11, max(2.4, 0.45 * rows + 1.4)), layout="constrained", squeeze=False)
    for ax, (grouping, values) in zip(axes[0], groupings.items()):
        labels = list(values)
        vals = np.array([values[k].get(metric, np.nan) if isinstance(values[k], dict) else np.nan for k in labels], dtype=float)
        counts = [values[k].get("users") if isinstance(values[k], dict) else None for k in labels]
        y = np.arange(len(labels))
        bars = ax.barh(y, vals, color="#9467bd")
        ax.bar_label(bars, labels=[f"{v:.3f}" + (f"  (n={c:,})" if c else "") for v, c in zip(vals, counts)], fontsize=8, padding=2)
        ax.set_yticks(y, [_group_label(grouping, k) for k in labels], fontsize=9)
        ax.invert_yaxis()
        top = np.nanmax(vals) if np.isfinite(vals).any() else 1.0
        ax.set_xlim(0, top * 1.6 if top > 0 else 1)
        ax.set_title(GROUP_TITLES.get(grouping, grouping.replace("_", " ")), fontsize=10)
        ax.set_xlabel(f"test {metric}")
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Test {metric} by user group ({protocol or 'sampled'})", fontsize=11)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def describe_mixing(before: float, after: float, chance: float) -> str:
    """The t-SNE section's verdict in words, relative to what random neighbours would give."""
    head = (f"Before the adapter {before:.1%} of an item's 10 nearest neighbours come from the other domain; "
            f"after it, {after:.1%}. Were the neighbours drawn at random, it would be about {chance:.0%}. ")
    if chance <= 0:
        return head
    if after < 0.1 * chance and before < 0.1 * chance:
        return head + ("So the two domains stay apart in both maps: nearly every item's neighbours are items of its own "
                       "domain, and the adapter has not put related items of the two domains side by side. Whatever "
                       "the model transfers between the domains, it learns from the users' mixed sequences, not from "
                       "item vectors that sit together.")
    if after > max(1.5 * before, before + 0.01):
        return head + (f"The adapter brings related items of the two domains closer ({after / max(before, 1e-9):.1f}x as many "
                       "cross-domain neighbours)" + (", while each domain keeps regions of its own." if after < 0.5 * chance
                                                      else ", to the point where the domains are well mixed."))
    if before > max(1.5 * after, after + 0.01):
        return head + "The adapter separates the domains more than the LLM vectors did."
    return head + "The adapter changes little in how the two domains sit relative to each other."


def plot_item_map(before: np.ndarray, after: np.ndarray, domain: np.ndarray, domains: list[str], out: Path,
                  seed: int = 0) -> tuple[Path, dict[str, float]]:
    """t-SNE of item vectors before and after the adapter, coloured by domain (legend below the maps)."""
    figures = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6), layout="constrained")
    for ax, (label, vecs) in zip(axes, [("before the adapter (LLM vectors)", before), ("after the adapter", after)]):
        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30, max_iter=500).fit_transform(vecs.astype(np.float32))
        mix = cross_domain_neighbours(vecs, domain)
        figures[label.split(" (")[0]] = mix
        for d, name in enumerate(domains):
            m = domain == d
            ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.6, color=DOMAIN_COLOURS[d], label=f"{name} ({m.sum():,} items)")
        ax.set_title(f"{label}\nneighbours from the other domain: {mix:.1%}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(domains), markerscale=3, frameon=False)
    fig.suptitle("Item vectors, t-SNE: are the two domains bridged?")
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out, figures


# ----- is the page current? ------------------------------------------------------------------------
def report_inputs(run_dir: str | Path, metric: str, item_map_items: int, seed: int) -> str:
    """A hash of everything the page is made from: this run's files, every finished run beside it
    (the comparisons), the dataset summary, the settings, and the report code's version."""
    run_dir = Path(run_dir)
    parts: list[Any] = [REPORT_VERSION, metric, int(item_map_items), int(seed)]
    for name in ("results.json", "metrics.jsonl", "model.safetensors"):
        path = run_dir / name
        parts.append([name, *(_stamp(path) if path.is_file() else [])])
    for other in sorted(run_dir.parent.iterdir()):
        if (other / "results.json").is_file():
            parts.append([other.name, *_stamp(other / "results.json")])
    dataset = run_dir.resolve().parent.parent / "dataset"
    parts += [_stamp(dataset / n) if (dataset / n).is_file() else None for n in ("meta.json", "stats.json")]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def report_is_current(run_dir: str | Path, inputs: str) -> bool:
    meta = Path(run_dir) / "report" / "meta.json"
    return (Path(run_dir) / "report" / "index.html").is_file() and meta.is_file() and read_json(meta).get("inputs") == inputs


# ----- the page ---------------------------------------------------------------------------------
def _table(rows: list[list[str]], header: list[str], bold_row: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = "".join(("<tr class='this'>" if i == bold_row else "<tr>") + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for i, r in enumerate(rows))
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _run_label(run_dir: Path, results: dict) -> str:
    model = results.get("model") or results.get("model_name")
    return f"{run_dir.name}" if not model or model in run_dir.name else f"{run_dir.name} ({model})"


def _section(title: str, sentence: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2><p class='look'>{html.escape(sentence)}</p>{body}"


def _data_section(summary: dict[str, Any]) -> str:
    stats, domains = summary["stats"], summary["domains"]
    rows = []
    kind = "SYNTHETIC (generated demo world)" if summary["synthetic"] else "real (imported from files)"
    source = summary["format"] + (f": {', '.join(summary['files'])}" if summary["files"] else "")
    rows.append(["source", source])
    rows.append(["data", kind])
    if stats:
        users = int(stats.get("users", 0))
        rows.append(["users", f"{users:,}"])
        for d in domains:
            rows.append([f"{d}: items / interactions",
                         f"{stats.get('items', {}).get(d, 0):,} / {stats.get('interactions', {}).get(d, 0):,}"])
        overlap = int(stats.get("overlap_users", 0))
        rows.append(["users with both domains (whole history)", f"{overlap:,} ({overlap / max(users, 1):.1%})"])
        h = stats.get("history_length", {})
        if h:
            rows.append(["history length", f"mean {h.get('mean', 0):.1f} (min {h.get('min', 0)}, max {h.get('max', 0)})"])
    rows.append(["split", "leave-one-out on each user's mixed history: last item = test, the one before = validation"])
    sentence = ("What every figure below was measured on: the users who have both domains are the ones a "
                "cross-domain model can help most.")
    return _section("Data", sentence, "<div class='data'>" + _table(rows, []) + "</div>")


def write_report(run_dir: str | Path, metric: str = "ndcg@10", item_map: dict[str, np.ndarray] | None = None,
                 inputs: str | None = None) -> Path:
    """Write `<run_dir>/report/index.html` and its PNGs; return the HTML path.

    `item_map`, when given, holds "before", "after" and "domain" arrays for a sample of items.
    `inputs` (report_inputs) is recorded in report/meta.json for report_is_current.

    The folder is written whole beside the old one and then swapped in (io.atomic_dir): a killed
    report leaves the previous page, or none, never an empty index.html that `run` takes as current.
    """
    run_dir = Path(run_dir)
    with atomic_dir(run_dir / "report") as out:
        _write_page(run_dir, out, metric, item_map, inputs)
    return run_dir / "report" / "index.html"


def _write_page(run_dir: Path, out: Path, metric: str, item_map: dict[str, np.ndarray] | None, inputs: str | None) -> None:
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path}: no results; train and evaluate the run first")
    results = read_json(results_path)
    summary = dataset_summary(run_dir, results)
    domains = summary["domains"]
    cfg = _run_config(run_dir)
    num_neg = int(cfg.get("eval", {}).get("num_negatives", 100))
    fingerprint = results.get("dataset", {}).get("fingerprint")

    # Every finished run beside this one, on the same dataset, is a point of comparison; sampled
    # figures compare only where the same number of negatives was drawn.
    runs: dict[str, dict] = {}
    negatives: dict[str, int] = {}
    chimeric: dict[str, bool] = {}  # sampled figures on the authors' ruler (eval.chimeric_negatives)
    for other in sorted(run_dir.parent.iterdir()):
        r = other / "results.json"
        if not r.is_file():
            continue
        try:
            res = read_json(r)
            other_cfg = _run_config(other)
        except (OSError, ValueError) as e:  # another run's damaged file: this run's page goes on without it
            log.warning("skipping %s: %s", other, e)
            continue
        if fingerprint and res.get("dataset", {}).get("fingerprint") not in (None, fingerprint):
            continue
        label = _run_label(other, res)
        runs[label] = res
        negatives[label] = int(other_cfg.get("eval", {}).get("num_negatives", 100))
        chimeric[label] = str(res.get("sampled_scoring", "")).startswith("chimeric")
    this_label = _run_label(run_dir, results)
    ordered = [this_label] + [n for n in runs if n != this_label]
    runs = {n: runs[n] for n in ordered if n in runs}

    sections: list[str] = []
    if summary["synthetic"]:
        sections.append(f"<p class='synthetic'><b>{html.escape(SYNTHETIC_NOTE)}.</b></p>")
    sections.append(_data_section(summary))

    # Results table: every run, both protocols, each row naming its protocol.
    rows, bold = [], None
    parts = ["overall"] + domains
    for name, r in runs.items():
        for mode in ("sampled", "full"):
            t = r.get("test", {}).get(mode)
            if not t:
                continue
            if name == this_label and mode == "sampled":
                bold = len(rows)
            proto = (f"sampled ({negatives[name]} neg.{', chimeric' if chimeric[name] else ''})" if mode == "sampled"
                     else "full")
            rows.append([name, proto] + [f"{t.get(s, {}).get(m, float('nan')):.4f}" for s in parts for m in ("hit@10", "ndcg@10")])
    header = ["run", "protocol"] + [f"{s} {m}" for s in parts for m in ("hit@10", "ndcg@10")]
    protocols = "<ul>" + "".join(f"<li>{html.escape(protocol_long(m, num_neg, summary['stats'].get('items')))}</li>"
                                  for m in ("sampled", "full"))
    if any(chimeric.values()):
        protocols += ("<li>chimeric: the authors' sampled ruler, where a negative's global and local parts come "
                      "from two different items; not comparable with the plain sampled rows</li>")
    protocols += "</ul>"
    baseline = "" if any(r.get("model") == "pop" for r in runs.values()) else " (no popularity baseline in this workspace yet)"
    sections.append(_section(
        "Test results of the runs in this workspace",
        "Compare each model with the popularity baseline first: a model that does not beat it has learned little "
        f"beyond how often items are bought{baseline}. Highlighted: this run.",
        protocols + _table(rows, header, bold_row=bold)))

    # Per-domain charts, one per protocol.
    shown = list(runs)[:MAX_CHART_RUNS]
    more = len(runs) - len(shown)
    for mode in ("sampled", "full"):
        # Sampled bars only on this run's ruler: the same number of negatives, scored the same way.
        chart_runs = {n: runs[n] for n in shown
                      if mode == "full" or (negatives[n] == num_neg and chimeric[n] == chimeric[this_label])}
        path = plot_run_comparison(chart_runs, domains, metric, mode, out / f"domains_{mode}.png", highlight=this_label,
                                   protocol=protocol_short(mode, num_neg))
        if path is not None:
            left_out = [n for n in shown if n not in chart_runs]
            note = f" {more} more {'run is' if more == 1 else 'runs are'} in the table above." if more > 0 else ""
            if left_out:
                note += (f" Not drawn here, as scored on another ruler (chimeric negatives or another number of "
                         f"them): {', '.join(left_out)}.")
            sections.append(_section(
                f"Test {metric} per target domain ({protocol_short(mode, num_neg)})",
                f"Longer is better; this run in blue, the others grey; a domain where this run falls behind a baseline "
                f"is where it has not learned that domain's users.{note}",
                f"<img src='{path.name}' alt='test {metric} per domain, {mode}'>"))

    valid_mode = cfg.get("train", {}).get("valid_mode", "sampled")
    valid_metric = cfg.get("train", {}).get("valid_metric", metric)
    path = plot_curves(read_epochs(run_dir), valid_metric, out / "curves.png", protocol_short(valid_mode, num_neg),
                       results.get("best_epoch"))
    if path is not None:
        sections.append(_section(
            "Training curves",
            "The loss should fall; the validation score picks the epoch whose weights are kept (dashed line), and a "
            "validation score that drops while the loss still falls is overfitting.",
            f"<img src='{path.name}' alt='training curves'>"))

    groups = results.get("test", {}).get("sampled", {}).get("groups", {})
    path = plot_groups(groups, metric, out / "groups.png", protocol_short("sampled", num_neg))
    if path is not None:
        sections.append(_section(
            f"Test {metric} by user group ({protocol_short('sampled', num_neg)})",
            "Where the model works and where it does not: users with one domain or both, short or long histories, "
            "and popular or rare targets (n = users in the group).",
            f"<img src='{path.name}' alt='test {metric} by user group'>"))

    mixing = None
    if item_map is not None:
        path, mixing = plot_item_map(item_map["before"], item_map["after"], item_map["domain"], domains, out / "item_map.png")
        chance = chance_share(np.asarray(item_map["domain"]))
        mixing["random neighbours"] = chance
        sections.append(_section(
            "Item vectors before and after the adapter",
            describe_mixing(mixing["before the adapter"], mixing["after the adapter"], chance),
            f"<img src='{path.name}' alt='t-SNE map of item vectors'>"
            f"<p class='small'>{len(item_map['domain']):,} items sampled with a fixed seed; 2-D positions from t-SNE, "
            "neighbour shares from the vectors themselves (cosine).</p>"))

    best = results.get("best_epoch")
    model = html.escape(str(results.get("model") or results.get("model_name") or "?"))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>llm4cdsr report: {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse;font-size:13px;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}tr.this td{{font-weight:bold;background:#eef4fb}}img{{max-width:100%}}
p.look{{color:#333;font-style:italic}}p.small{{font-size:12px;color:#555}}
p.synthetic{{background:#fff3cd;border:1px solid #e0b000;padding:.6em 1em}}.data td{{text-align:left}}</style>
</head><body><h1>Run {html.escape(run_dir.name)}</h1>
<p>Model: {model}; best epoch (on validation): {html.escape(str(best))}. Test figures are of the best-on-validation
weights; the test set never chose anything.</p>
{''.join(sections)}
</body></html>"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    if mixing:
        (out / "domain_mixing.json").write_text(json.dumps(mixing, indent=2), encoding="utf-8")
    write_json(out / "meta.json", {"report_version": REPORT_VERSION, "inputs": inputs, "metric": metric})


def build_report(run_dir: str | Path, metric: str = "ndcg@10", item_map_items: int = 3000, seed: int | None = None,
                 force: bool = True) -> tuple[Path, bool]:
    """Write the report (the item map from the run's own model); with force=False, only if its
    inputs changed. Returns (index.html, written). `seed` (default: the run's) picks the item sample."""
    run_dir = Path(run_dir)
    seed = int(_run_config(run_dir).get("seed", 0)) if seed is None else int(seed)
    inputs = report_inputs(run_dir, metric, item_map_items, seed)
    index = run_dir / "report" / "index.html"
    if not force and report_is_current(run_dir, inputs):
        return index, False
    item_map = None
    check_folder(run_dir)  # a damaged results.json or weights file: one line naming it
    try:
        item_map = TrainedRecommender.load(run_dir).item_map_sample(item_map_items, seed=seed)
    except NotImplementedError as e:
        log.info("report: no item map (%s)", e)
    except ValueError as e:  # the dataset changed since training: the message says so and what to do
        raise e if isinstance(e, ArtifactError) else ArtifactError(str(e)) from None
    return write_report(run_dir, metric=metric, item_map=item_map, inputs=inputs), True
