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
    p.add_argument("--models", default="llm4cdsr,sasrec_mixed",
                   help="models to train at each ratio: names, or LABEL:section.key=value[:...] for a variant "
                        "(e.g. llm4cdsr,cosine:model.align=cosine,alpha0:model.alpha=0,sasrec_single)")
    p.add_argument("--seeds", default="", help="training seeds, e.g. 42,43,44 (default: the config's seed); the user "
                   "sample and who keeps both domains are drawn with the config's seed whatever these are")
    p.add_argument("--users", type=int, default=0, help="train on a seeded sample of this many users (0 = all)")
    p.add_argument("--out", help="output folder (default <workspace>/experiments/overlap)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from llm4cdsr.data.dataset import PreparedDataset
    from llm4cdsr.experiments import parse_variant, run_overlap, variant_config
    from llm4cdsr.models import model_needs
    from llm4cdsr.pipeline import load_llm_inputs, load_profile_embeddings_for
    from llm4cdsr.workspace import Workspace

    cfg = config_from_args(args)
    try:
        ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] or [cfg["seed"]]
    except ValueError as e:
        raise CliError(f"--ratios / --seeds: {e}") from e
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    ws = Workspace(cfg["workspace"])
    dataset = PreparedDataset.load(ws.dataset_dir)
    vectors = profiles = None
    try:
        for spec in models:
            run_cfg = variant_config(cfg, *parse_variant(spec), seeds[0])
            needs = model_needs(run_cfg["model"])
            if "item_vectors" in needs and vectors is None:
                vectors, _ = load_llm_inputs(dict(run_cfg, model=dict(run_cfg["model"], beta=0.0)), dataset)
            if "profiles" in needs and profiles is None:
                profiles = load_profile_embeddings_for(run_cfg)
        out = Path(args.out) if args.out else ws.root / "experiments" / "overlap"
        table = run_overlap(cfg, ratios, models, out, dataset, vectors, users=args.users, profiles=profiles, seeds=seeds)
    except ValueError as e:
        raise CliError(str(e)) from e
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"table: {out / 'results.csv'}; plot: {out / 'overlap.png'} ({len(table)} rows)")
    return 0
