"""`llm4cdsr benchmark`: every model and ablation on one config, several seeds, one table."""
from __future__ import annotations

import argparse
from pathlib import Path

from llm4cdsr.cli.common import CliError

DEFAULT_MODELS = "llm4cdsr,sasrec_mixed,sasrec_single,gru4rec,pop"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "benchmark", help="train models and ablations on one config over several seeds; tables with t-tests",
        description="Train every variant (a model, an ablation, or one of --variants FILE) for every seed with "
                    "`llm4cdsr run` in one workspace (the data and LLM artifacts made once, before any training; "
                    "runs in parallel jobs; finished runs skipped, interrupted ones resumed; a failing run is "
                    "reported and the others go on), copy each finished run's config, results, per-user ranks "
                    "and log to the archive, and write the tables (both protocols; overall, per domain, by user "
                    "group; mean ± std over seeds; paired t-tests against the first variant) as benchmark.md, "
                    "summary.csv, runs.csv and index.html (bar plots) to --out. The tables are rebuilt from the "
                    "workspace's runs and, for those it lacks, the archive's (--table-only on another machine).",
    )
    p.add_argument("--config", "-c", metavar="FILE", help="YAML config or preset name (default: the built-in demo world)")
    p.add_argument("--workspace", "-w", metavar="DIR", help="workspace folder (default: the config's)")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"variants in table order, the first the t-tests' reference (default {DEFAULT_MODELS}); "
                        "built in: llm4cdsr, sasrec_mixed, sasrec_mixed_llm, sasrec_single, gru4rec, c2dsr-sampled_ce, "
                        "tri_cdr, pop, ablation-id_global, ablation-random_local, ablation-alpha0, ablation-beta, "
                        "ablation-freeze_local_flipped; groups: models, ablations; and the labels of --variants")
    p.add_argument("--variants", metavar="FILE",
                   help="YAML of more variants: 'label: [KEY=VALUE, ...]' or 'label: {name: display name, overrides: [...]}'")
    p.add_argument("--seeds", default="42,43,44", help="training seeds (default 42,43,44)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (default 1)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per run (0 = cores / jobs); 1 leaves cores to other work")
    p.add_argument("--epochs", type=int, default=0, help="most epochs per run (0 = the config's; early stopping decides)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every run, before the variant's own; repeatable")
    p.add_argument("--tune", action="store_true",
                   help="first choose each variant's lr, dropout, weight decay and objective on validation (one seed, "
                        "one key at a time over a small grid; recorded in <out>/tuning.json) and train the seeds there")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="with --tune: the grid instead of the default (lr 5e-4,1e-3,2e-3; dropout 0.2,0.5; "
                        "weight_decay 0,5e-4; loss sampled_ce,bce); repeatable, searched in the given order")
    p.add_argument("--metric", default="ndcg@10", help="metric of the tables and t-tests (default ndcg@10)")
    p.add_argument("--out", metavar="DIR", help="where the tables go (default benchmark-<config name>)")
    p.add_argument("--archive", metavar="DIR", help="where finished runs are copied (default <out>/runs)")
    p.add_argument("--retrain-archived", action="store_true", help="train runs that only the archive holds again")
    p.add_argument("--table-only", action="store_true", help="train nothing: only write the tables of the finished runs")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Imported here: every command's parser is built at start-up, and the benchmark brings torch,
    # scipy and matplotlib.
    from llm4cdsr.benchmark import (
        ABLATIONS,
        MODELS,
        NAMES,
        TUNE_GRID,
        Benchmark,
        BenchmarkError,
        expand_models,
        load_variants,
        parse_grid,
        run_benchmark,
    )
    from llm4cdsr.config import load_config

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as e:
        raise CliError(f"--seeds: {e}") from e
    if not seeds:
        raise CliError("--seeds: no seed given")
    if args.jobs < 1 or args.threads < 0 or args.epochs < 0:
        raise CliError("--jobs must be at least 1, --threads and --epochs at least 0")
    cfg = load_config([args.config] if args.config else [], args.set)
    workspace = Path(args.workspace or cfg["workspace"])
    out = Path(args.out or f"benchmark-{Path(args.config).stem if args.config else 'demo'}")
    variants, names = {**MODELS, **ABLATIONS}, dict(NAMES)
    try:
        if args.variants:
            extra, extra_names = load_variants(Path(args.variants))
            variants.update(extra)
            names.update(extra_names)
        labels = expand_models(args.models, variants)
        grid = (parse_grid(args.grid) if args.grid else dict(TUNE_GRID)) if args.tune else None
        bench = Benchmark(config=args.config, workspace=workspace, archive=Path(args.archive) if args.archive else out / "runs",
                          variants=variants, names=names, epochs=args.epochs or None, overrides=list(args.set),
                          retrain_archived=args.retrain_archived)
        summary = run_benchmark(bench, labels, seeds, out, jobs=args.jobs, threads=args.threads, tune_grid=grid,
                                table_only=args.table_only, metric=args.metric)
    except (BenchmarkError, ValueError) as e:
        raise CliError(str(e)) from e
    if summary.tables:
        print(summary.tables[0].read_text(encoding="utf-8"))
    print(summary.text())
    return 1 if summary.failed else 0
