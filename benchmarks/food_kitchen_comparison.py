"""LLM4CDSR against every baseline and ablation on Food x Kitchen, with one budget for all.

    python benchmarks/food_kitchen_comparison.py [--seeds 42,43,44] [--epochs 200] [--jobs 2]

Every run goes through `llm4cdsr run -c food-kitchen` (hidden 128, 2 blocks, 1 head, dropout 0.5,
batch 128, max_len 50, lr 1e-3, patience 5) with only the variant's keys changed, in one shared
workspace, so every model is scored on the same saved sampled candidates and trained on the same
LLM artifacts (item embeddings, PCA views, profiles: made once, before any training; they take no
run seed, so the seeds vary training only). Finished runs are skipped, an interrupted one resumes from its checkpoint: run it
again to continue. `--jobs N` trains N runs at once, each on cores / N threads. At the end it
writes the comparison table (mean and std over seeds; paired t-test of per-user ndcg@10, averaged
over seeds, against LLM4CDSR's, averaged likewise) to --out.
`--threads 1` leaves the other cores to other work (one job per core was the fastest here).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# label -> overrides of the preset. The first is the reference of the t-tests.
VARIANTS: dict[str, list[str]] = {
    "llm4cdsr": [],
    "sasrec_mixed": ["model.name=sasrec_mixed"],
    "sasrec_mixed_llm": ["model.name=sasrec_mixed_llm"],
    "sasrec_single": ["model.name=sasrec_single"],
    "gru4rec": ["model.name=gru4rec"],
    "pop": ["model.name=pop"],
    "ablation-id_global": ["model.global_item=id"],
    "ablation-random_local": ["model.local_init=random"],
    "ablation-alpha0": ["model.alpha=0"],
    "ablation-beta0": ["model.beta=0"],
    "ablation-freeze_local_flipped": ["FLIP_FREEZE"],
    "reference-noncausal": ["model.causal=false"],
}
# How each variant is named in the table.
NAMES = {
    "llm4cdsr": "LLM4CDSR (preset)",
    "sasrec_mixed": "SASRec, mixed sequence, ID embeddings",
    "sasrec_mixed_llm": "SASRec, mixed sequence, adapted LLM vectors",
    "sasrec_single": "SASRec, one per domain",
    "gru4rec": "GRU4Rec, mixed sequence",
    "pop": "popularity",
    "ablation-id_global": "ablation: ID embeddings in the global branch",
    "ablation-random_local": "ablation: random init of the local tables",
    "ablation-alpha0": "ablation: alpha = 0 (no item regularisation)",
    "ablation-beta0": "ablation: beta = 0 (no user profiles)",
    "ablation-freeze_local_flipped": "ablation: local tables {flipped} (preset: {preset})",
    "reference-noncausal": "the authors' non-causal encoder (leaks the target)",
}


def run_one(label: str, seed: int, args, threads: int, stages: str = "train") -> tuple[str, int, float]:
    overrides = list(VARIANTS[label])
    if overrides == ["FLIP_FREEZE"]:
        from llm4cdsr.config import load_config

        frozen = load_config([args.config])["model"]["freeze_local"]
        overrides = [f"model.freeze_local={'false' if frozen else 'true'}"]
    cmd = [sys.executable, "-m", "llm4cdsr", "run", "-c", args.config, "-w", args.workspace,
           f"seed={seed}", f"train.epochs={args.epochs}", "train.progress=false", f"train.num_threads={threads}",
           f"run.stages=[{stages}]", f"run.name={label}-seed{seed}", *overrides]
    log = Path(args.workspace) / "logs" / f"{label}-seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as f:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    return label, rc, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="food-kitchen")
    parser.add_argument("--workspace", default=str(ROOT / "workspace-food-kitchen"))
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--epochs", type=int, default=200, help="most epochs per run (early stopping: patience 5)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="labels to run, in order")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (0 = cores / jobs); 1 leaves a core to other work on the machine")
    parser.add_argument("--stages", default="prepare,embed,profile,train",
                        help="stages each run may run (e.g. 'train' on a workspace whose LLM artifacts are already made)")
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
        todo = [(label, seed) for seed in seeds for label in labels]
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
        with ThreadPoolExecutor(args.jobs) as pool:
            for label, rc, seconds in pool.map(lambda t: run_one(t[0], t[1], args, threads, train_stages), todo):
                print(f"{label}: rc {rc}, {seconds:.0f} s", flush=True)
    write_table(args, labels, seeds)
    return 0


def write_table(args, labels: list[str], seeds: list[int]) -> None:
    from llm4cdsr.cli.compare import compare_table
    from llm4cdsr.config import load_config

    frozen = load_config([args.config])["model"]["freeze_local"]
    states = ("frozen, as in the authors' code", "learned")
    flipped, preset = (states[1], states[0]) if frozen else states
    names = {label: name.format(flipped=flipped, preset=preset) for label, name in NAMES.items()}
    runs_dir = Path(args.workspace) / "runs"
    found = {runs_dir / f"{label}-seed{s}": names[label] for label in labels for s in seeds
             if (runs_dir / f"{label}-seed{s}" / "results.json").is_file()}
    if not found:
        print("no finished runs yet")
        return
    runs = list(found)
    reference = next((r for r in runs if r.name.startswith(labels[0] + "-")), runs[0])
    parts = []
    for mode in ("sampled", "full"):
        parts.append(compare_table(runs, reference, "ndcg@10", mode, markdown=True, labels=found))
    table = "\n\n".join(parts) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table, encoding="utf-8")
    print(table)
    if args.readme:
        put_between_markers(Path(args.readme), table)


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
