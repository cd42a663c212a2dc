"""LLM4CDSR against every baseline and ablation on Food x Kitchen, with one budget for all.

    python benchmarks/food_kitchen_comparison.py [--seeds 42,43,44] [--epochs 50] [--jobs 2]

Every run goes through `llm4cdsr run -c food-kitchen` (hidden 128, 2 blocks, 1 head, dropout 0.5,
batch 128, max_len 50, lr 1e-3, the sampled softmax, patience 5, at most --epochs) with only the
variant's keys changed (the authors' setting: its own preset and its 7 epochs), in one shared
workspace, so every model is scored on the same saved sampled candidates and trained on the same
LLM artifacts (item embeddings, PCA views, profiles: made once, before any training; they take no
run seed, so the seeds vary training only). Finished runs are skipped, an interrupted one resumes from its checkpoint: run it
again to continue. `--jobs N` trains N runs at once, each on cores / N threads. At the end it
writes the comparison tables (mean and std over seeds; paired t-test of per-user ndcg@10, averaged
over seeds, against LLM4CDSR's, averaged likewise; the authors' setting on their chimeric ruler and
rescored with one item per candidate) to --out.
`--threads 1` leaves the other cores to other work (one job per core was the fastest here).

Each finished run's config, results, per-user test ranks and training log are copied to
benchmarks/results/food-kitchen-runs/<variant>-seed<seed>/ (--archive), which is committed: the
workspace does not survive a change of machine, and the table (t-tests included) is rebuilt from
the workspace's runs and, for those it lacks, from the archived ones. A run archived already is not
trained again (--retrain-archived to train it anyway, e.g. after a change to the model's code) unless
the config it gets now differs from the archived one (a changed preset or default): such a stale copy
is left out of the table and trained again (a stale run in the workspace is first moved aside, to
runs/<name>.stale-<n>).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from llm4cdsr.cli.compare import compare_table
from llm4cdsr.config import load_config
from llm4cdsr.io import read_json
from llm4cdsr.training.run import resumes_as_is

ROOT = Path(__file__).resolve().parents[1]

# C2DSR at its code's settings (dropout 0.2) under the sampled softmax: the base of its grid.
C2DSR_SAMPLED = ["model.name=c2dsr", "model.dropout=0.2", "model.c2dsr_objective=train"]

# label -> overrides of the preset ("CONFIG=<preset>" first: another preset). The first is the
# reference of the t-tests. Every baseline trains under its better softmax objective (measured:
# see README), the ablations under the preset's; "-bce" rows are the paper's objective.
VARIANTS: dict[str, list[str]] = {
    "llm4cdsr": [],
    "llm4cdsr-bce": ["train.loss=bce"],
    "sasrec_mixed": ["model.name=sasrec_mixed"],
    "sasrec_mixed_llm": ["model.name=sasrec_mixed_llm"],
    "sasrec_single": ["model.name=sasrec_single"],
    "gru4rec": ["model.name=gru4rec"],
    # The L2 term (Adam, 5e-4) that lifted C2DSR on validation, given to the others too.
    "sasrec_mixed-l2": ["model.name=sasrec_mixed", "train.weight_decay=0.0005"],
    "llm4cdsr-l2": ["train.weight_decay=0.0005"],
    "pop": ["model.name=pop"],
    # The field's cross-domain baselines, at their code's dropout (0.2); C2DSR always trains with its
    # paper's full softmax, Tri-CDR under the preset's objective and, in "-bce", its paper's.
    "c2dsr": ["model.name=c2dsr", "model.dropout=0.2"],
    # Its full softmax over 27,637 kitchen items makes a CPU step ~15x a SASRec step: the sampled one.
    "c2dsr-sampled_ce": [*C2DSR_SAMPLED],
    # C2DSR at 0.2 peaked at epoch 3 on validation, below SASRec: the preset's dropout instead.
    "c2dsr-sampled_ce-dropout0.5": ["model.name=c2dsr", "model.dropout=0.5", "model.c2dsr_objective=train"],
    # The validation grid around its code's settings (dropout 0.5 was worse on validation: 0.234 vs 0.243).
    "c2dsr-sampled_ce-lr5e-4": [*C2DSR_SAMPLED, "train.lr=0.0005"],
    "c2dsr-sampled_ce-lambda1": [*C2DSR_SAMPLED, "model.c2dsr_lambda=1.0"],
    # The L2 term its code declares (weight_decay 5e-4, Adam) but never hands to the optimiser.
    "c2dsr-sampled_ce-l2": [*C2DSR_SAMPLED, "train.weight_decay=0.0005"],
    # No graph layer: the training transition graph hands each training input its own successors.
    "c2dsr-sampled_ce-l2-gnn0": [*C2DSR_SAMPLED, "train.weight_decay=0.0005", "model.c2dsr_gnn_layers=0"],
    "tri_cdr": ["model.name=tri_cdr", "model.dropout=0.2"],
    "tri_cdr-bce": ["model.name=tri_cdr", "model.dropout=0.2", "train.loss=bce"],
    # Tri-CDR at 0.2 peaked at epoch 5 on validation, below SASRec: the preset's dropout instead.
    "tri_cdr-dropout0.5": ["model.name=tri_cdr", "model.dropout=0.5"],
    # Their recipe: the encoders start from trained SASRecs (the same seed's runs, in the workspace).
    "tri_cdr-pretrained": ["model.name=tri_cdr", "model.dropout=0.2",
                           "model.init_from=[runs/sasrec_mixed-seed{seed},runs/sasrec_single-seed{seed}]"],
    # The learned local tables pulled toward their PCA start (model.local_anchor): a regulariser.
    "llm4cdsr-anchor30": ["model.local_anchor=30"],
    # The cross-domain alignment that moves (model.align=cosine: InfoNCE on cosine over the
    # histories' cross-domain neighbours), at the paper's weight and at 1.
    "llm4cdsr-cosine-a0.1": ["model.align=cosine", "model.alpha=0.1"],
    "llm4cdsr-cosine-a1": ["model.align=cosine", "model.alpha=1"],
    "ablation-id_global": ["model.global_item=id"],
    "ablation-random_local": ["model.local_init=random"],
    "ablation-alpha0": ["model.alpha=0"],
    "ablation-beta": ["FLIP_BETA"],
    "ablation-freeze_local_flipped": ["FLIP_FREEZE"],
    "variant-authors_block": ["model.block=authors", "model.null_key=true"],
    "reference-noncausal": ["model.causal=false"],
    # Their Food x Kitchen figures are of 7 epochs: the same cap here, not the script's.
    "authors-setting": ["CONFIG=food-kitchen-authors", "train.epochs=7"],
    "authors-setting-noncausal": ["CONFIG=food-kitchen-authors", "model.causal=false", "train.epochs=7"],
}
# How each variant is named in the table.
NAMES = {
    "llm4cdsr": "LLM4CDSR (preset)",
    "llm4cdsr-bce": "LLM4CDSR, the paper's BCE with one negative",
    "sasrec_mixed": "SASRec, mixed sequence, ID embeddings",
    "sasrec_mixed_llm": "SASRec, mixed sequence, adapted LLM vectors",
    "sasrec_single": "SASRec, one per domain",
    "gru4rec": "GRU4Rec, mixed sequence",
    "sasrec_mixed-l2": "SASRec, mixed sequence, L2 5e-4",
    "llm4cdsr-l2": "LLM4CDSR, L2 5e-4",
    "pop": "popularity",
    "c2dsr": "C2DSR (Cao et al. 2022): transition graphs, three SASRecs, infomax",
    "c2dsr-sampled_ce": "C2DSR, the sampled softmax (its paper: the full softmax)",
    "c2dsr-sampled_ce-dropout0.5": "C2DSR, the sampled softmax, dropout 0.5 (its code: 0.2)",
    "c2dsr-sampled_ce-lr5e-4": "C2DSR, the sampled softmax, lr 5e-4 (its code: 1e-3)",
    "c2dsr-sampled_ce-lambda1": "C2DSR, the sampled softmax, lambda 1 (no infomax; its paper: 0.7)",
    "c2dsr-sampled_ce-l2": "C2DSR, the sampled softmax, the L2 5e-4 its code declares",
    "c2dsr-sampled_ce-l2-gnn0": "C2DSR, the sampled softmax, L2 5e-4, no graph layer (its code: 1)",
    "tri_cdr": "Tri-CDR (Ma et al. 2024): triple cross-domain attention and contrast",
    "tri_cdr-bce": "Tri-CDR, the paper's BCE with one negative",
    "tri_cdr-dropout0.5": "Tri-CDR, dropout 0.5 (its code: 0.2)",
    "tri_cdr-pretrained": "Tri-CDR started from the trained SASRecs, as its paper",
    "llm4cdsr-anchor30": "LLM4CDSR, local tables anchored to their PCA start (local_anchor 30)",
    "llm4cdsr-cosine-a0.1": "LLM4CDSR, cosine alignment (alpha 0.1)",
    "llm4cdsr-cosine-a1": "LLM4CDSR, cosine alignment (alpha 1)",
    "ablation-id_global": "ablation: ID embeddings in the global branch",
    "ablation-random_local": "ablation: random init of the local tables",
    "ablation-alpha0": "ablation: alpha = 0 (no item regularisation)",
    "ablation-beta": "ablation: beta = {beta} (preset: {preset_beta})",
    "ablation-freeze_local_flipped": "ablation: local tables {flipped} (preset: {preset})",
    "variant-authors_block": "variant: the authors' block + null key",
    "reference-noncausal": "the authors' non-causal encoder (leaks the target)",
    "authors-setting": "the authors' setting (food-kitchen-authors), their ruler",
    "authors-setting-noncausal": "the authors' setting, non-causal (as published), their ruler",
}
# Variants that start from other variants' runs of the same seed (model.init_from): those must be
# finished in the workspace (weights are not archived), so they are trained first where missing.
NEEDS = {"tri_cdr-pretrained": ("sasrec_mixed", "sasrec_single")}
# Variants scored on the authors' chimeric ruler: also rescored with one item per candidate.
CHIMERIC = ("authors-setting", "authors-setting-noncausal")
ONE_ITEM_RESULTS = "results-one-item.json"


def resolve_overrides(label: str, config: str) -> tuple[str, list[str]]:
    """(preset, overrides) of a variant; the FLIP_* entries become the opposite of the preset's value."""
    overrides = list(VARIANTS[label])
    if overrides and overrides[0].startswith("CONFIG="):
        config = overrides.pop(0).split("=", 1)[1]
    model = load_config([config])["model"]
    if overrides == ["FLIP_FREEZE"]:
        overrides = [f"model.freeze_local={'false' if model['freeze_local'] else 'true'}"]
    if overrides == ["FLIP_BETA"]:
        overrides = [f"model.beta={0 if model['beta'] > 0 else 1}"]
    return config, overrides


def run_arguments(label: str, seed: int, args) -> tuple[str, list[str]]:
    """(preset, overrides) that `llm4cdsr run` gets for (label, seed), apart from threads and stages."""
    config, overrides = resolve_overrides(label, args.config)
    return config, [f"seed={seed}", f"train.epochs={args.epochs}", "train.progress=false", f"run.name={label}-seed{seed}",
                    *args.set, *(o.replace("{seed}", str(seed)) for o in overrides)]


def is_current(run_dir: Path, label: str, seed: int, args) -> bool:
    """The run in `run_dir` was made with the config (label, seed) gets today: a preset or a default
    that changed since makes an archived run stale (a key added since, at its default, does not)."""
    config, overrides = run_arguments(label, seed, args)
    return resumes_as_is(run_dir, load_config([config], [f"workspace={args.workspace}", *overrides]))


def set_aside_stale(label: str, seed: int, args) -> Path | None:
    """A workspace run of (label, seed) made with another config than it gets now (a changed preset or
    default) cannot be continued: it is moved to <name>.stale-<n> beside it (kept, not deleted), so
    that the run can be made again under its name. Returns where it went."""
    run_dir = Path(args.workspace) / "runs" / f"{label}-seed{seed}"
    if not (run_dir / "config.yaml").is_file() or is_current(run_dir, label, seed, args):
        return None
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.stale-{n}")).exists():
        n += 1
    run_dir.rename(aside)
    print(f"{run_dir}: made with another config than {label} gets now; moved to {aside.name}", flush=True)
    return aside


def run_one(label: str, seed: int, args, threads: int, stages: str = "train") -> tuple[str, int, float]:
    config, overrides = run_arguments(label, seed, args)
    if "train" in stages:
        set_aside_stale(label, seed, args)
    cmd = [sys.executable, "-m", "llm4cdsr", "run", "-c", config, "-w", args.workspace,
           f"train.num_threads={threads}", f"run.stages=[{stages}]", *overrides]
    log = Path(args.workspace) / "logs" / f"{label}-seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as f:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        run_dir = Path(args.workspace) / "runs" / f"{label}-seed{seed}"
        if rc == 0 and label in CHIMERIC and "train" in stages and not (run_dir / ONE_ITEM_RESULTS).is_file():
            # The same weights on the honest ruler: each candidate one item in both parts.
            rc = subprocess.call([sys.executable, "-m", "llm4cdsr", "evaluate", str(run_dir), "eval.chimeric_negatives=false",
                                  "-o", str(run_dir / ONE_ITEM_RESULTS)], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if rc == 0:
        archive_run(run_dir, Path(args.archive))
    return label, rc, time.perf_counter() - started


# What of a finished run the table needs (config, test metrics, per-user ranks for the t-tests) and
# its training log (the validation curve). The workspace is not kept between machines; these are.
ARCHIVED = ("config.yaml", "results.json", "train.log", ONE_ITEM_RESULTS)
# Of ranks.parquet, the columns the t-tests read (0.4 MB a Food x Kitchen run instead of 0.8 MB).
ARCHIVED_RANKS = ["user_idx", "rank_sampled", "rank_full"]


def archive_run(run_dir: Path, archive: Path) -> None:
    """Copy a finished run's table inputs to archive/<run name>/, replacing an older copy whole;
    nothing to do when the copy is as new as the run's results."""
    results, target = run_dir / "results.json", archive / run_dir.name
    copy = target / "results.json"
    if not results.is_file() or (copy.is_file() and copy.stat().st_mtime >= results.stat().st_mtime):
        return
    tmp = archive / f".{run_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ARCHIVED:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, tmp / name)
    ranks = pd.read_parquet(run_dir / "ranks.parquet", columns=ARCHIVED_RANKS)
    ranks.to_parquet(tmp / "ranks.parquet", index=False, compression="zstd")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def finished_run(label: str, seed: int, args, needs: str = "results.json") -> Path | None:
    """The run folder of (label, seed): the workspace's, else the archived copy, else None; a copy
    made with another config than (label, seed) gets today is stale and not used."""
    for root in (Path(args.workspace) / "runs", Path(args.archive)):
        run_dir = root / f"{label}-seed{seed}"
        if (run_dir / needs).is_file():
            if is_current(run_dir, label, seed, args):
                return run_dir
            print(f"{run_dir}: made with another config than {label} gets now; left out")
    return None


def runs_to_train(labels: list[str], seeds: list[int], args) -> list[tuple[str, int]]:
    """(label, seed) pairs to hand to `llm4cdsr run`, seed by seed: all but those only the archive
    holds (a run finished in the workspace is handed over too: `run` skips it or finishes its stages)."""
    def archived_only(label: str, seed: int) -> bool:
        name = f"{label}-seed{seed}"
        archived = Path(args.archive) / name
        return ((archived / "results.json").is_file() and not (Path(args.workspace) / "runs" / name).is_dir()
                and is_current(archived, label, seed, args))

    return [(label, seed) for seed in seeds for label in labels if args.retrain_archived or not archived_only(label, seed)]


def missing_needs(todo: list[tuple[str, int]], args) -> list[tuple[str, int]]:
    """The runs that the variants of `todo` start from (NEEDS) and the workspace lacks with weights
    (an archived copy has none): to train before them."""
    def usable(label: str, seed: int) -> bool:
        run_dir = Path(args.workspace) / "runs" / f"{label}-seed{seed}"
        return all((run_dir / f).is_file() for f in ("results.json", "model.safetensors")) and is_current(run_dir, label, seed, args)

    needed = dict.fromkeys((need, seed) for label, seed in todo for need in NEEDS.get(label, ()))
    return [(label, seed) for label, seed in needed if not usable(label, seed)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="food-kitchen")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run, before the variant's own (e.g. embed.backend=onnx); repeatable")
    parser.add_argument("--workspace", default=str(ROOT / "workspace-food-kitchen"))
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--epochs", type=int, default=50, help="most epochs per run (early stopping: patience 5 decides)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="labels to run, in order")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (0 = cores / jobs); 1 leaves a core to other work on the machine")
    parser.add_argument("--stages", default="prepare,embed,profile,train",
                        help="stages each run may run (e.g. 'train' on a workspace whose LLM artifacts are already made)")
    parser.add_argument("--archive", default=str(ROOT / "benchmarks" / "results" / "food-kitchen-runs"),
                        help="where each finished run's config, results, per-user ranks and log are copied; the table "
                             "reads a run from the workspace, else from here")
    parser.add_argument("--retrain-archived", action="store_true", help="train runs that only the archive holds again")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "food-kitchen-comparison.md"))
    parser.add_argument("--readme", default=str(ROOT / "README.md"),
                        help="also put the table between the comparison markers of this file ('' = don't)")
    parser.add_argument("--table-only", action="store_true", help="only write the table of the finished runs")
    args = parser.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    labels = [v for v in args.variants.split(",") if v]
    unknown = set(labels) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if not args.table_only:
        todo = runs_to_train(labels, seeds, args)
        # One thread per job: OpenMP threads of several processes fighting over few cores are far
        # slower than the same work done one thread each.
        threads = args.threads or max((os.cpu_count() or 1) // args.jobs, 1)
        stages = args.stages.split(",")
        llm_stages = [s for s in stages if s in ("prepare", "embed", "profile")]
        if llm_stages:
            # The data and LLM artifacts are made once, by the reference model (it reads all of them),
            # before any training starts, so no two jobs build them at once. They do not depend on
            # the run seed: every variant and seed trains on the same ones.
            label, rc, seconds = run_one(next(iter(VARIANTS)), seeds[0], args, os.cpu_count() or 1, ",".join(llm_stages))
            print(f"data and LLM artifacts: rc {rc}, {seconds:.0f} s", flush=True)
            if rc:
                return rc
        train_stages = ",".join(s for s in stages if s not in llm_stages)
        # What others start from first, then the rest (a run already done is skipped by `run`).
        for phase in (missing_needs(todo, args), todo):
            with ThreadPoolExecutor(args.jobs) as pool:
                for label, rc, seconds in pool.map(lambda t: run_one(t[0], t[1], args, threads, train_stages), phase):
                    print(f"{label}: rc {rc}, {seconds:.0f} s", flush=True)
    write_table(args, labels, seeds)
    return 0


def write_table(args, labels: list[str], seeds: list[int]) -> None:
    for label in labels:  # runs finished by an earlier version of this script, or by hand
        for s in seeds:
            archive_run(Path(args.workspace) / "runs" / f"{label}-seed{s}", Path(args.archive))
    model = load_config([args.config])["model"]
    states = ("frozen, as in the authors' code", "learned")
    flipped, preset = (states[1], states[0]) if model["freeze_local"] else states
    preset_beta = model["beta"]
    names = {label: name.format(flipped=flipped, preset=preset, beta=0 if preset_beta > 0 else 1, preset_beta=preset_beta)
             for label, name in NAMES.items()}
    # The runs scored on the authors' chimeric ruler have a table of their own (both rulers).
    found = {run: names[label] for label in labels if label not in CHIMERIC for s in seeds
             if (run := finished_run(label, s, args)) is not None}
    if not found:
        print("no finished runs yet")
        return
    runs = list(found)
    reference = next((r for r in runs if r.name.startswith(labels[0] + "-")), runs[0])
    parts = []
    for mode in ("sampled", "full"):
        parts.append(compare_table(runs, reference, "ndcg@10", mode, markdown=True, labels=found))
    parts.append(authors_ruler_table(args, [label for label in labels if label in CHIMERIC], seeds, names))
    table = "\n\n".join(p for p in parts if p) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table, encoding="utf-8")
    print(table)
    if args.readme:
        put_between_markers(Path(args.readme), table)


def authors_ruler_table(args, labels: list[str], seeds: list[int], names: dict[str, str]) -> str:
    """The authors'-setting runs on both rulers: their chimeric one (results.json) and one item per
    candidate (the same weights rescored), sampled test hit@10 / ndcg@10, mean over seeds."""
    rows = []
    for label in labels:
        done = [run for s in seeds if (run := finished_run(label, s, args, ONE_ITEM_RESULTS)) is not None]
        if not done:
            continue
        cells = []
        for results in ([read_json(r / "results.json")["test"] for r in done], [read_json(r / ONE_ITEM_RESULTS)["test"] for r in done]):
            for metric in ("hit@10", "ndcg@10"):
                cells.append(f"{np.mean([t['sampled']['overall'][metric] for t in results]):.4f}")
        full = np.mean([read_json(r / "results.json")["test"]["full"]["overall"]["ndcg@10"] for r in done])
        rows.append(f"| {names[label]} | {len(done)} | " + " | ".join(cells) + f" | {full:.4f} |")
    if not rows:
        return ""
    head = ("*the authors' setting on both rulers: test metrics, mean over runs*\n\n"
            "| model | runs | their ruler hit@10 | their ruler ndcg@10 | one item per candidate hit@10 | "
            "one item per candidate ndcg@10 | full ndcg@10 |\n|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(rows)


START, END = "<!-- food-kitchen-comparison:start -->", "<!-- food-kitchen-comparison:end -->"


def put_between_markers(path: Path, table: str) -> None:
    """Replace what stands between the two comparison markers of `path` (written atomically)."""
    text = path.read_text(encoding="utf-8")
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        print(f"{path}: no single pair of comparison markers ({START} ... {END}); table not put there")
        return
    head, rest = text.split(START)
    tail = rest.split(END)[1]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{head}{START}\n{table}{END}{tail}", encoding="utf-8")
    tmp.replace(path)
    print(f"table put into {path}")


if __name__ == "__main__":
    sys.exit(main())
