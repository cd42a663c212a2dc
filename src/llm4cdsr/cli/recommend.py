"""`llm4cdsr recommend`: top-k items with titles and scores, for a user, a raw-id history or a batch."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llm4cdsr.cli.common import CliError
from llm4cdsr.data.dataset import SYNTHETIC_NOTE
from llm4cdsr.data.errors import DataError


def register(subparsers) -> None:
    p = subparsers.add_parser("recommend", help="recommend items for users of a trained run",
                              description="Seen items are excluded unless --include-seen. Exactly one of --user, --history, --users-file. "
                                          "Each call loads the run (Food x Kitchen: 2.8 s on an idle 2-core machine, 1.6 s of it "
                                          "importing torch); `llm4cdsr serve RUN` loads it once and answers in milliseconds.")
    p.add_argument("--run", required=True, help="run folder (<workspace>/runs/<name>)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a raw user id of the run's dataset")
    who.add_argument("--history", help="comma-separated raw item ids, oldest first (a user not in training)")
    who.add_argument("--users-file", help="batch mode: a text file with one raw user id per line (unknown ids are skipped and listed)")
    p.add_argument("--domain", help="recommend only this domain's items (default: both, ranked together)")
    p.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--why", action="store_true", help="show the user's profile text (with --user)")
    p.add_argument("--include-seen", action="store_true", help="do not exclude items already in the history")
    p.add_argument("--new-items", metavar="FILE", help="CSV/Parquet of items not in training (item_id, domain, title, ...) to score inductively")
    p.add_argument("--out", help="write the recommendations as CSV (.csv) or JSON lines (.jsonl) here, in every mode "
                                 "(default: a table on stdout; a batch writes CSV there)")
    p.set_defaults(func=main)


OUT_SUFFIXES = (".csv", ".jsonl")


def main(args: argparse.Namespace) -> int:
    # Imported here: every command's parser is built at start-up, and this import brings torch
    # (1.7 s of CPU, measured) that `llm4cdsr --help` or `prepare` should not pay.
    from llm4cdsr.data.raw import listing, read_table
    from llm4cdsr.recommender import TrainedRecommender, UnknownUserError

    # Every option checked before the run loads (seconds): a mistake costs nothing.
    if args.out and not args.out.lower().endswith(OUT_SUFFIXES):
        raise CliError(f"--out {args.out}: write .csv or .jsonl (the suffix decides the format)")
    if args.why and not args.user:
        raise CliError("--why shows a known user's profile: it needs --user (a --history or a batch has no profile)")
    if args.k < 1:
        raise CliError(f"-k {args.k}: must be at least 1")
    new_items = None
    if args.new_items:
        try:
            new_items = read_table(args.new_items, ",", "new items")
        except DataError as e:
            raise CliError(f"--new-items {e}") from None
    users = None
    if args.users_file:
        path = Path(args.users_file)
        try:
            users = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise CliError(f"--users-file {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not users:
            raise CliError(f"--users-file {path}: no user id in it")

    rec = TrainedRecommender.load(args.run)
    if rec.synthetic:  # stderr: the batch CSV on stdout stays a clean table
        print(f"note: {SYNTHETIC_NOTE}", file=sys.stderr)
    exclude = not args.include_seen
    if new_items is not None:
        try:
            added = rec.add_items(new_items)
        except (ValueError, NotImplementedError) as e:
            raise CliError(f"--new-items {args.new_items}: {e}") from None
        print(f"scoring {added} new items inductively (global adapter, and the local tables' view of them)", file=sys.stderr)
        skipped = rec.skipped_new_items
        if skipped["known_id"]:
            print(f"--new-items: {len(skipped['known_id'])} row(s) with an id the run already knows left out "
                  f"(scored as trained items): {listing(skipped['known_id'])}", file=sys.stderr)
        if skipped["unknown_domain"]:
            print(f"--new-items: {len(skipped['unknown_domain'])} row(s) with a domain other than "
                  f"{' / '.join(rec.domains)} left out: {listing(skipped['unknown_domain'])}", file=sys.stderr)
    try:
        if users is not None:
            frame = rec.recommend_batch(users, args.k, args.domain, exclude, skip_unknown=True)
            unknown = frame.attrs.get("unknown_users", [])
            if unknown:
                print(f"{len(unknown)} of {len(users)} users unknown to the run's dataset, skipped: {listing(unknown)}",
                      file=sys.stderr)
        elif args.user:
            frame = rec.recommend(args.user, args.k, args.domain, exclude)
        else:
            history = [s.strip() for s in args.history.split(",") if s.strip()]
            frame = rec.recommend_history(history, args.k, args.domain, exclude)
            unknown = frame.attrs.get("unknown_history_ids", [])
            if unknown:
                print(f"--history: {len(unknown)} of {len(history)} item ids unknown to the run's dataset, left out: "
                      f"{listing(unknown)}", file=sys.stderr)
    except (UnknownUserError, ValueError) as e:
        raise CliError(str(e)) from e
    if args.out:
        if args.out.lower().endswith(".jsonl"):
            frame.to_json(args.out, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_csv(args.out, index=False)
        print(f"{frame['user_id'].nunique() if users is not None else 1} user(s), {len(frame)} rows -> {args.out}")
        return 0
    if users is not None:
        frame.to_csv(sys.stdout, index=False)
        return 0
    if args.why:
        print(f"profile: {rec.profile_text(args.user) or '(no profile in this workspace)'}\n")
    print(f"{'rank':>4}  {'score':>9}  {'domain':<10} {'item':<14} title")
    for it in frame.itertuples(index=False):
        flag = " (new)" if it.new else ""
        print(f"{it.rank:>4}  {it.score:>9.4f}  {it.domain:<10} {it.item_id:<14} {it.title[:90]}{flag}")
    return 0
