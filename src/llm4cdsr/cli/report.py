"""`llm4cdsr report RUN`: write the HTML report of a finished run."""
from __future__ import annotations

import argparse
from pathlib import Path

from llm4cdsr.cli.common import CliError


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
    from llm4cdsr.training.run import RunError

    try:
        path, _ = build_report(Path(args.run), metric=args.metric, item_map_items=args.items)
    except RunError as e:  # no weights yet, and the like: the message says what to do
        raise CliError(str(e)) from e
    print(path)
    return 0
