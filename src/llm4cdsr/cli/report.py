"""`llm4cdsr report RUN`: write the HTML report of a finished run."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="HTML report with plots for a finished run")
    p.add_argument("run", help="run folder (<workspace>/runs/<name>)")
    p.add_argument("--metric", default="ndcg@10", help="metric to plot (default ndcg@10)")
    p.add_argument("--items", type=int, default=3000, help="items sampled (with the run's seed) for the 2-D item map")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Imported here: every command's parser is built at start-up, and this brings torch,
    # matplotlib and scikit-learn (measured: torch alone is 1.7 s of CPU).
    from llm4cdsr.report import build_report

    path, _ = build_report(Path(args.run), metric=args.metric, item_map_items=args.items)
    print(path)
    return 0
