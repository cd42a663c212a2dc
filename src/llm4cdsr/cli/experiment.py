"""`llm4cdsr experiment overlap`: accuracy against the share of users who have both domains."""
from __future__ import annotations

import argparse
from pathlib import Path

from llm4cdsr.cli.common import CliError, add_config_args, config_from_args


def register(subparsers) -> None:
    parent = subparsers.add_parser("experiment", help="experiments: overlap (the paper's overlap dilemma)")
    kinds = parent.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    p = kinds.add_parser("overlap", help="train at several shares of overlapping users and plot accuracy against it")
    add_config_args(p)
    p.add_argument("--ratios", default="0.1,0.25,0.5,1.0", help="shares of overlapping users that keep both domains")
    p.add_argument("--models", default="llm4cdsr,sasrec_mixed", help="models to train at each ratio")
    p.add_argument("--users", type=int, default=0, help="train on a seeded sample of this many users (0 = all)")
    p.add_argument("--out", help="output folder (default <workspace>/experiments/overlap)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from llm4cdsr.data.dataset import PreparedDataset
    from llm4cdsr.experiments import run_overlap
    from llm4cdsr.pipeline import load_llm_inputs
    from llm4cdsr.workspace import Workspace

    cfg = config_from_args(args)
    try:
        ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    except ValueError as e:
        raise CliError(f"--ratios: {e}") from e
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    ws = Workspace(cfg["workspace"])
    dataset = PreparedDataset.load(ws.dataset_dir)
    vectors = None
    for name in models:
        if name == "llm4cdsr" and cfg["model"]["beta"] > 0:
            raise CliError("the overlap experiment trains without user profiles (they would leak the removed domain): add model.beta=0")
        v, _ = load_llm_inputs(dict(cfg, model=dict(cfg["model"], name=name, beta=0.0)), dataset)
        vectors = vectors if v is None else v
    out = Path(args.out) if args.out else ws.root / "experiments" / "overlap"
    try:
        table = run_overlap(cfg, ratios, models, out, dataset, vectors, users=args.users)
    except ValueError as e:
        raise CliError(str(e)) from e
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"table: {out / 'results.csv'}; plot: {out / 'overlap.png'} ({len(table)} rows)")
    return 0
