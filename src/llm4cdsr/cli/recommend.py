"""`llm4cdsr recommend`: top-k items with titles and scores, for a user, a raw-id history or a batch."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llm4cdsr.cli.common import CliError
from llm4cdsr.data.dataset import SYNTHETIC_NOTE


def register(subparsers) -> None:
    p = subparsers.add_parser("recommend", help="recommend items for users of a trained run",
                              description="Seen items are excluded unless --include-seen. Exactly one of --user, --history, --users-file. "
                                          "Each call loads the run (Food x Kitchen: 2.8 s on an idle 2-core machine, 1.6 s of it "
                                          "importing torch); `llm4cdsr serve RUN` loads it once and answers in milliseconds.")
    p.add_argument("--run", required=True, help="run folder (<workspace>/runs/<name>)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a raw user id of the run's dataset")
    who.add_argument("--history", help="comma-separated raw item ids, oldest first (a user not in training)")
    who.add_argument("--users-file", help="batch mode: a text file with one raw user id per line")
    p.add_argument("--domain", help="recommend only this domain's items (default: both, ranked together)")
    p.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--why", action="store_true", help="show the user's profile text")
    p.add_argument("--include-seen", action="store_true", help="do not exclude items already in the history")
    p.add_argument("--new-items", metavar="FILE", help="CSV/Parquet of items not in training (item_id, domain, title, ...) to score inductively")
    p.add_argument("--out", help="batch mode: write CSV (.csv) or JSON lines (.jsonl) here (default: CSV on stdout)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Imported here: every command's parser is built at start-up, and this import brings torch
    # (1.7 s of CPU, measured) that `llm4cdsr --help` or `prepare` should not pay.
    import pandas as pd

    from llm4cdsr.recommender import TrainedRecommender, UnknownUserError

    rec = TrainedRecommender.load(args.run)
    if rec.synthetic:  # stderr: the batch CSV on stdout stays a clean table
        print(f"note: {SYNTHETIC_NOTE}", file=sys.stderr)
    exclude = not args.include_seen
    if args.new_items:
        path = Path(args.new_items)
        items = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
        print(f"scoring {rec.add_items(items)} new items through the global branch", file=sys.stderr)
    try:
        if args.users_file:
            users = [line.strip() for line in Path(args.users_file).read_text(encoding="utf-8").splitlines() if line.strip()]
            frame = rec.recommend_batch(users, args.k, args.domain, exclude)
            if args.out and args.out.endswith(".jsonl"):
                frame.to_json(args.out, orient="records", lines=True, force_ascii=False)
            else:
                frame.to_csv(args.out or sys.stdout, index=False)
            if args.out:
                print(f"{len(users)} users, {len(frame)} rows -> {args.out}")
            return 0
        if args.user:
            frame = rec.recommend(args.user, args.k, args.domain, exclude)
        else:
            frame = rec.recommend_history([s.strip() for s in args.history.split(",") if s.strip()], args.k, args.domain, exclude)
    except (UnknownUserError, ValueError) as e:
        raise CliError(str(e)) from e
    if args.why and args.user:
        print(f"profile: {rec.profile_text(args.user) or '(no profile in this workspace)'}\n")
    print(f"{'rank':>4}  {'score':>9}  {'domain':<10} {'item':<14} title")
    for it in frame.itertuples(index=False):
        flag = " (new)" if it.new else ""
        print(f"{it.rank:>4}  {it.score:>9.4f}  {it.domain:<10} {it.item_id:<14} {it.title[:90]}{flag}")
    return 0
