"""`llm4cdsr compare`: a table over runs, grouped by model (mean and std over seeds), with a paired
t-test on per-user metrics against the reference run's group."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from llm4cdsr.cli.common import CliError
from llm4cdsr.config import default_config
from llm4cdsr.data.dataset import SYNTHETIC_NOTE
from llm4cdsr.io import file_damage, read_json, read_yaml

# Keys that do not change what a run is: runs differing only here are seeds of one model.
IGNORED = {"seed", "run", "workspace", "device", "train.progress", "train.num_threads", "train.tensorboard"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="compare runs: mean/std over seeds per model, paired t-test against a reference",
        description="Group runs by their config apart from the seed, show test metrics (mean +- std over the "
                    "group's runs) and a paired t-test (scipy) of each group's per-user metric, averaged over its "
                    "runs, against the reference run's group (averaged likewise), over the users both evaluated.",
    )
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="run folders, or run names under <workspace>/runs (none: every finished run there)")
    p.add_argument("--workspace", "-w", metavar="DIR", default="workspace", help="where run names are looked up")
    p.add_argument("--reference", "-r", metavar="RUN",
                   help="reference run for the t-test (default: the first RUN; with no RUN, the first llm4cdsr run)")
    p.add_argument("--metric", default="ndcg@10", help="metric of the per-domain columns and the t-test (default ndcg@10)")
    p.add_argument("--mode", default="sampled", choices=("sampled", "full"), help="evaluation mode of those (default sampled)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    runs = [_find(r, args.workspace) for r in args.runs] if args.runs else finished_runs(Path(args.workspace))
    runs = readable_runs(runs)
    if not runs:
        raise CliError(f"{args.workspace}/runs holds no finished run (no readable results.json); train one first")
    reference = _find(args.reference, args.workspace) if args.reference else (runs[0] if args.runs else _default_reference(runs))
    if not readable_runs([reference]):
        raise CliError(f"--reference {reference}: that run is damaged (above); choose another")
    if reference not in runs:
        runs.insert(0, reference)
    print(compare_table(runs, reference, args.metric, args.mode, markdown=args.markdown))
    return 0


def finished_runs(workspace: Path) -> list[Path]:
    """Every run folder under <workspace>/runs with results, by name."""
    folder = workspace / "runs"
    return sorted(p for p in folder.iterdir() if (p / "results.json").is_file()) if folder.is_dir() else []


def readable_runs(runs: list[Path]) -> list[Path]:
    """The runs whose results, config and ranks read back; each other one is named on stderr and
    left out, so that one damaged run does not stop the table of all the others."""
    out = []
    for r in runs:
        why = None
        try:
            results, cfg = read_json(r / "results.json"), read_yaml(r / "config.yaml")
            if not isinstance(results, dict) or not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
                why = "results.json or config.yaml is not what a run writes (cut short?)"
            elif problem := file_damage(r / "ranks.parquet"):
                why = f"ranks.parquet: {problem}"
        except (OSError, ValueError) as e:  # DamagedArtifactError is a ValueError
            why = str(e).split("; ", 1)[0]
        if why:
            print(f"llm4cdsr compare: skipped the damaged run {r}: {why}", file=sys.stderr)
        else:
            out.append(r)
    return out


def _default_reference(runs: list[Path]) -> Path:
    for r in runs:
        cfg = yaml.safe_load((r / "config.yaml").read_text(encoding="utf-8")) or {}
        if cfg.get("model", {}).get("name") == "llm4cdsr":
            return r
    return runs[0]


def _find(name: str, workspace: str) -> Path:
    for path in (Path(name), Path(workspace) / "runs" / name):
        if (path / "results.json").is_file():
            return path
    raise CliError(f"{name}: no finished run there (no results.json), nor under {workspace}/runs")


def compare_table(runs: list[Path], reference: Path, metric: str, mode: str, markdown: bool = False,
                  labels: dict[Path, str] | None = None) -> str:
    """Rows of runs grouped by config apart from the seed (or by `labels`, run -> row name).

    The t-test pairs each group's per-user metric, averaged over the group's runs, with the
    reference group's (the group holding `reference`), averaged likewise: with several seeds on
    both sides, no single seed of the reference decides the verdict.
    """
    # Imported here: every command's parser is built at start-up, and scipy.stats (1.1 s of CPU)
    # and training.metrics (it imports torch: 1.7 s) would be paid by `llm4cdsr recommend` and every
    # other command (measured: importing them at the top made every command's start-up 1.2-1.7 s longer).
    from scipy import stats

    from llm4cdsr.training.metrics import parse_metric, per_user

    flat = {}
    # A key a run's config lacks was added to the package after the run: the run had its default then.
    defaults = _flatten(default_config())
    results = {r: read_json(r / "results.json") for r in runs}
    # Only metrics every run computed: another cutoff (ndcg@7) printed nan columns and still a
    # difference and a p-value from per-user values the runs never reported.
    known = sorted(set.intersection(*(set(results[r].get("test", {}).get(mode, {}).get("overall", {})) for r in runs)))
    if metric not in known:
        raise CliError(f"--metric {metric!r} is not among the metrics these runs computed ({mode}): {', '.join(known) or 'none'}")
    parse_metric(metric)
    for r in runs:
        cfg = yaml.safe_load((r / "config.yaml").read_text(encoding="utf-8"))
        own = _flatten(cfg)
        # A warm-started run is told by the models it started from, not their folders: each seed
        # starts from its own seed's runs, and those seeds are still one model.
        started = results[r].get("init_from")
        if started:
            own["model.init_from"] = [s["model"] for s in started]
        known = {k: defaults[k] for k in defaults if k not in own and k.split(".")[0] in cfg}
        flat[r] = {k: v for k, v in {**known, **own}.items() if k not in IGNORED and k.split(".")[0] not in IGNORED}
    keys = sorted({k for f in flat.values() for k in f})
    varying = [k for k in keys if k != "model.name" and len({repr(f.get(k)) for f in flat.values()}) > 1]
    groups: dict[str, list[Path]] = {}
    for r in runs:
        f = flat[r]
        label = labels[r] if labels else f["model.name"] + "".join(f" {k.split('.', 1)[-1]}={f.get(k)}" for k in varying)
        groups.setdefault(label, []).append(r)
    ref_label = next(label for label, members in groups.items() if reference in members)

    def user_metric(r: Path) -> pd.Series:
        ranks = pd.read_parquet(r / "ranks.parquet", columns=["user_idx", f"rank_{mode}"])
        return pd.Series(per_user(ranks[f"rank_{mode}"].to_numpy(), metric), index=ranks["user_idx"].to_numpy())

    def group_metric(members: list[Path]) -> pd.Series:
        return pd.concat([user_metric(r) for r in members], axis=1).mean(axis=1)

    ref_users = group_metric(groups[ref_label])
    domains = results[reference]["dataset"]["domains"]
    columns = [("sampled", "overall", "hit@10"), ("sampled", "overall", "ndcg@10"), ("full", "overall", "hit@10"),
               ("full", "overall", "ndcg@10")] + [(mode, d, metric) for d in domains]
    header = ["model", "runs"] + [f"{m} {'' if s == 'overall' else s + ' '}{k}" for m, s, k in columns] + [f"diff {metric} ({mode})", "p (paired t)"]
    rows = []
    for label, members in groups.items():
        cells = [label, str(len(members))]
        for m, s, k in columns:
            values = np.array([results[r]["test"][m].get(s, {}).get(k, np.nan) for r in members], dtype=float)
            # One run has no spread to show: write the value alone rather than a made-up "± 0".
            cells.append(f"{np.nanmean(values):.4f} ± {np.nanstd(values, ddof=1):.4f}" if len(values) > 1 else f"{values[0]:.4f}")
        mine = group_metric(members)
        both = mine.index.intersection(ref_users.index)
        a, b = mine.loc[both].to_numpy(), ref_users.loc[both].to_numpy()
        ok = ~(np.isnan(a) | np.isnan(b))
        if label == ref_label or ok.sum() < 2:
            cells += ["ref" if label == ref_label else "-", "-"]
        else:
            p = stats.ttest_rel(a[ok], b[ok]).pvalue
            # Below the smallest float, scipy reports 0: say so instead of printing p = 0.
            cells += [f"{(a[ok] - b[ok]).mean():+.4f}", f"{p:.2g}" if p > 0 else "<1e-300"]
        rows.append(cells)
    n_ref = len(groups[ref_label])
    against = reference.name if n_ref == 1 else f"{ref_label} (per-user mean over its {n_ref} runs)"
    title = f"test metrics (mean ± std over runs); t-test of per-user {metric} ({mode}) against {against}"
    note = any(results[r].get("dataset", {}).get("synthetic") or _synthetic_workspace(r) for r in runs)
    if markdown:
        lines = ([f"**{SYNTHETIC_NOTE}.**", ""] if note else []) + [f"*{title}*", "", "| " + " | ".join(header) + " |",
                                                                  "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths))
    lines = ([SYNTHETIC_NOTE] if note else []) + [title, fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    return "\n".join(lines)


def _synthetic_workspace(run_dir: Path) -> bool:
    """Runs trained before results.json recorded it: the workspace's dataset says."""
    meta = run_dir.resolve().parent.parent / "dataset" / "meta.json"
    return meta.is_file() and bool(read_json(meta).get("synthetic"))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
