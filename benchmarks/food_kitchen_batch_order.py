"""Batch order on the 15,000-user Food x Kitchen sample: length-bucketed batches against random ones.

    python benchmarks/food_kitchen_batch_order.py              # train what is missing, then the table
    python benchmarks/food_kitchen_batch_order.py --table-only # the table from the runs (workspace, else archive)

The sample and training are the overlap experiment's at share 1 (`benchmarks/food_kitchen_overlap.py`:
--users 15000 seeded users, patience 3, at most 30 epochs, seed 42), so its bucketed runs of LLM4CDSR
and SASRec (`train.bucket_pool=128`, the default then) are the references here, read from that
experiment's runs (workspace, else its archive). The arms trained here, each one `llm4cdsr experiment
overlap` call into <workspace>/experiments/batching:
  - random order (`train.bucket_pool=1`, the default now) for SASRec over the mixed sequence
    (LLM4CDSR's is the overlap experiment's `nobucket` row);
  - `train.bucket_pool=2`: pools of 256 users, each cut into its shorter and its longer half;
  - bucketed with `train.loss_norm=epoch`: each domain's loss summed and divided by the epoch's mean
    count per batch, which weighs every target alike whatever batch it lands in.
Each finished run's config, results, metrics and per-user test ranks are copied to --archive
(committed). The table: test ndcg@10 in both protocols and a paired t-test of per-user ndcg@10
against the model's bucketed reference.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from llm4cdsr.io import read_json
from llm4cdsr.training.metrics import paired_tests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from food_kitchen_overlap import archive_run  # noqa: E402  (the overlap experiment's archive layout)

ROOT = Path(__file__).resolve().parents[1]
SEED = 42
# label -> (model, `llm4cdsr experiment overlap --models` spec, or None for the overlap experiment's own run)
ARMS = {
    "llm4cdsr": ("LLM4CDSR", None),
    "nobucket": ("LLM4CDSR", None),
    "epochnorm": ("LLM4CDSR", "epochnorm:train.loss_norm=epoch"),
    "sasrec_mixed": ("SASRec, mixed", None),
    "sasrec_mixed-nobucket": ("SASRec, mixed", "sasrec_mixed-nobucket:model.name=sasrec_mixed:train.bucket_pool=1"),
    "sasrec_mixed-bucket2": ("SASRec, mixed", "sasrec_mixed-bucket2:model.name=sasrec_mixed:train.bucket_pool=2"),
    "sasrec_mixed-epochnorm": ("SASRec, mixed", "sasrec_mixed-epochnorm:model.name=sasrec_mixed:train.loss_norm=epoch"),
}
REFERENCE = {"LLM4CDSR": "llm4cdsr", "SASRec, mixed": "sasrec_mixed"}
SETTING = {"llm4cdsr": "bucketed (128)", "nobucket": "random order", "epochnorm": "bucketed, loss_norm=epoch",
           "sasrec_mixed": "bucketed (128)", "sasrec_mixed-nobucket": "random order",
           "sasrec_mixed-bucket2": "bucket_pool 2", "sasrec_mixed-epochnorm": "bucketed, loss_norm=epoch"}


def run_dir(label: str, workspace: Path, archive: Path, overlap_archive: Path) -> Path | None:
    """The finished run of an arm: this experiment's (workspace, else archive) or the overlap experiment's."""
    name = f"{label}-overlap1-seed{SEED}"
    own = ARMS[label][1] is not None
    places = ([workspace / "experiments" / "batching" / "runs", archive / "runs"] if own else
              [workspace / "experiments" / "overlap-preset" / "runs", overlap_archive / "runs"])
    return next((p / name for p in places if (p / name / "results.json").is_file()), None)


def train(spec: str, workspace: Path, users: int) -> int:
    cmd = [sys.executable, "-m", "llm4cdsr", "experiment", "overlap", "-c", "food-kitchen", "-w", str(workspace),
           "--users", str(users), "--out", str(workspace / "experiments" / "batching"), "--ratios", "1",
           "--seeds", str(SEED), "--models", spec, "train.patience=3", "train.epochs=30", "train.progress=false",
           "train.num_threads=1", "train.bucket_pool=128"]  # the references' batches; an arm's own setting wins
    return subprocess.call(cmd, cwd=ROOT)


def table(runs: dict[str, Path]) -> str:
    lines = ["| model | batches | best epoch | valid ndcg@10 | test sampled ndcg@10 | diff | p | test full ndcg@10 | diff | p |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, ref in REFERENCE.items():
        labels = [label for label, (m, _) in ARMS.items() if m == model and label in runs]
        if ref not in runs:
            continue
        groups = {label: [runs[label]] for label in labels}
        tests = {mode: paired_tests(groups, ref, "ndcg@10", mode) for mode in ("sampled", "full")}
        for label in labels:
            results = read_json(runs[label] / "results.json")
            cells = [model, SETTING[label], str(results["best_epoch"]), f"{results['valid']['sampled']['overall']['ndcg@10']:.4f}"]
            for mode in ("sampled", "full"):
                cells.append(f"{results['test'][mode]['overall']['ndcg@10']:.4f}")
                diff, p = tests[mode].get(label, (None, None))
                cells += ["ref", "-"] if diff is None else [f"{diff:+.4f}", f"{p:.2g}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=ROOT / "workspace-food-kitchen")
    parser.add_argument("--users", type=int, default=15000)
    parser.add_argument("--archive", type=Path, default=ROOT / "benchmarks" / "results" / "food-kitchen-batch-order")
    parser.add_argument("--overlap-archive", type=Path, default=ROOT / "benchmarks" / "results" / "food-kitchen-overlap")
    parser.add_argument("--table-only", action="store_true", help="train nothing")
    args = parser.parse_args()
    failed = []
    for label, (_, spec) in ARMS.items():
        found = run_dir(label, args.workspace, args.archive, args.overlap_archive)
        if found is None and spec is None:
            print(f"{label}: the overlap experiment's run is missing (benchmarks/food_kitchen_overlap.py --plan full)")
        elif found is None and not args.table_only and train(spec, args.workspace, args.users) != 0:
            failed.append(label)
        found = run_dir(label, args.workspace, args.archive, args.overlap_archive)
        if found is not None and spec is not None and found.parent != args.archive / "runs":
            archive_run(found, args.archive / "runs" / found.name)
    runs = {label: d for label in ARMS if (d := run_dir(label, args.workspace, args.archive, args.overlap_archive))}
    text = (f"Batch order, Food x Kitchen, {args.users:,}-user sample (the overlap experiment's, share 1), seed {SEED}; "
            "p: paired t-test of per-user test ndcg@10 against the model's bucketed run.\n\n" + table(runs))
    args.archive.mkdir(parents=True, exist_ok=True)
    (args.archive / "results.md").write_text(text, encoding="utf-8")
    print(text)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
