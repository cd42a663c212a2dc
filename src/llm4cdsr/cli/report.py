"""`llm4cdsr report RUN`: write the HTML report of a finished run."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="HTML report with plots for a finished run")
    p.add_argument("run", help="run folder (<workspace>/runs/<name>)")
    p.add_argument("--metric", default="ndcg@10", help="metric to plot (default ndcg@10)")
    p.add_argument("--items", type=int, default=3000, help="items sampled for the 2-D item map")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from llm4cdsr.api import TrainedRecommender
    from llm4cdsr.report import write_report

    run_dir = Path(args.run)
    item_map = None
    try:
        item_map = TrainedRecommender.load(run_dir).item_map_sample(args.items)
    except NotImplementedError as e:
        print(f"no item map: {e}")
    print(write_report(run_dir, metric=args.metric, item_map=item_map))
    return 0
