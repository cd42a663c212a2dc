"""`llm4cdsr train`: train and evaluate one model on the workspace's dataset; writes a run folder.

Data parallel on several processes: `torchrun --nproc_per_node N -m llm4cdsr train ...`.
"""
from __future__ import annotations

import argparse
import os

from llm4cdsr.cli.common import CliError, add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train and evaluate a model (writes <workspace>/runs/<name>/)",
        description="Train the configured model on the workspace's dataset (reading only the LLM artifacts it "
                    "needs), select the epoch on validation, evaluate on test (sampled and full ranking) and "
                    "write the run folder. Under torchrun, each process takes a share of the batches.",
    )
    add_config_args(p)
    p.add_argument("--run-name", help="run folder name under <workspace>/runs (default: <model>-seed<seed>-<config hash>)")
    p.add_argument("--resume", action="store_true", help="continue the run folder's last checkpoint, also with a changed train.epochs / train.patience "
                        "(the same command continues a run of its very config without it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llm4cdsr.data.dataset import PreparedDataset
    from llm4cdsr.pipeline import load_llm_inputs, run_dir_for
    from llm4cdsr.training.candidates import CandidateError
    from llm4cdsr.training.run import RunError, resumes_as_is, train_run
    from llm4cdsr.training.trainer import TrainingError
    from llm4cdsr.workspace import Workspace

    if args.run_name:
        args.overrides.append(f"run.name={args.run_name}")
    cfg = config_from_args(args)
    run_dir = run_dir_for(cfg)
    dataset = PreparedDataset.load(Workspace(cfg["workspace"]).dataset_dir)
    vectors, profiles = load_llm_inputs(cfg, dataset)
    # The same command after a Ctrl-C or a kill continues the run, as `llm4cdsr run` does.
    resume = args.resume or resumes_as_is(run_dir, cfg)
    try:
        results = train_run(cfg, run_dir, dataset, item_vectors=vectors, profiles=profiles, resume=resume)
    except (RunError, TrainingError, CandidateError) as e:
        raise CliError(str(e)) from e
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {run_dir}")
        print(format_results(results))
    return 0


def format_results(results: dict, stage: str = "test") -> str:
    """A small table: mode x (overall, domains) of hit@10 / ndcg@10 / mrr@10."""
    lines = [f"{stage} (best epoch {results.get('best_epoch', '-')}):"]
    for mode, block in results[stage].items():
        cells = [name for name in block if name != "groups"]
        lines.append(f"  {mode:8s} " + " | ".join(
            f"{name} hit@10 {block[name]['hit@10']:.4f} ndcg@10 {block[name]['ndcg@10']:.4f} mrr@10 {block[name]['mrr@10']:.4f}"
            for name in cells))
    return "\n".join(lines)
