"""`llm4cdsr prepare`: raw data -> <workspace>/dataset/ (see llm4cdsr.data.prepare)."""
from __future__ import annotations

import argparse
import time

from llm4cdsr.cli.common import CliError, add_config_args, config_from_args
from llm4cdsr.data.build import DUPLICATE_POLICIES
from llm4cdsr.data.filters import REPEAT_POLICIES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare", help="import raw data (table, Amazon dumps, RecBole files, Douban dump) into a workspace",
        description="Import a generic CSV/Parquet table, two Amazon review dumps (2018 or 2023), RecBole atomic "
                    "files or the Douban book/movie dump, filter them, split leave-one-out and write "
                    "<workspace>/dataset/. With no input file, prepares the built-in synthetic demo world. Skipped "
                    "when the dataset matches inputs and options. Input formats: docs/input-formats.md.",
        epilog="examples:\n"
               "  llm4cdsr prepare --interactions inter.csv --items items.csv --out ws\n"
               "  llm4cdsr prepare --reviews Grocery_and_Gourmet_Food.json.gz Home_and_Kitchen.json.gz \\\n"
               "      --meta meta_Grocery_and_Gourmet_Food.json.gz meta_Home_and_Kitchen.json.gz --out ws --min-user 5 --min-item 3\n"
               "  llm4cdsr prepare -c douban-book-movie --douban 'douban_dataset(text information)' --out ws\n"
               "  llm4cdsr prepare -c my.yaml data.repeats=keep_last",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--out", "-o", metavar="DIR", help="workspace folder; the dataset goes to DIR/dataset/ (same as --workspace)")
    src = p.add_argument_group("input (overrides data.* of the config)")
    src.add_argument("--format", choices=["auto", "synthetic", "table", "amazon", "amazon2018", "amazon2023", "recbole", "douban"])
    src.add_argument("--interactions", action="append", metavar="FILE",
                     help="interactions table (CSV/Parquet), a folder holding one, or a RecBole .inter (repeat for one per domain)")
    src.add_argument("--items", action="append", metavar="FILE", help="items table (CSV/Parquet) or RecBole .item (repeat for one per domain)")
    src.add_argument("--reviews", nargs=2, metavar=("A", "B"), help="two Amazon review dumps, one per domain")
    src.add_argument("--meta", nargs=2, metavar=("A", "B"), help="the two Amazon metadata dumps")
    src.add_argument("--douban", metavar="DIR", help="the Douban dump folder (bookreviews_cleaned.txt, moviereviews_cleaned.txt "
                     "and their metadata books_cleaned.txt, movies_cleaned.txt)")
    src.add_argument("--skip-bad-lines", action="store_true", default=None, help="skip malformed lines in Amazon/Douban dumps (counted, reported)")
    opt = p.add_argument_group("preparation")
    opt.add_argument("--domains", nargs=2, metavar=("A", "B"), help="domain order: A gets the first global ids (default: sorted names)")
    opt.add_argument("--domain-map", action="append", metavar="RAW=NAME", help="rename or merge domain values (repeatable); RAW= drops RAW")
    opt.add_argument("--time-min", metavar="T", help="drop interactions before T (number in the data's unit, or a date 2015-01-01)")
    opt.add_argument("--time-max", metavar="T", help="drop interactions at or after T")
    opt.add_argument("--min-user", type=int, metavar="N", help="k-core: users need >= N interactions (0 = off)")
    opt.add_argument("--min-item", type=int, metavar="N", help="k-core: items need >= N interactions (0 = off)")
    opt.add_argument("--duplicates", choices=DUPLICATE_POLICIES, help="exact duplicate rows (same user, item, time): drop (default, with a warning) or keep")
    opt.add_argument("--repeats", choices=REPEAT_POLICIES, help="repeated (user, item) pairs")
    opt.add_argument("--max-history", type=int, metavar="N", help="keep each user's N most recent interactions (0 = all)")
    p.add_argument("--force", action="store_true", help="prepare again even if the dataset is current")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _domain_map(pairs: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pair in pairs:
        if "=" not in pair:
            raise CliError(f"--domain-map {pair!r}: expected RAW=NAME (or RAW= to drop RAW)")
        raw, name = pair.split("=", 1)
        out[raw] = name or None
    return out


def apply_flags(cfg: dict, args: argparse.Namespace) -> dict:
    """Flags win over config files and overrides, as the most specific layer."""
    if args.out:
        if args.workspace and args.workspace != args.out:
            raise CliError(f"--out {args.out} and --workspace {args.workspace} disagree; give one")
        cfg["workspace"] = args.out
    d = cfg["data"]
    if args.interactions:
        d["interactions"] = args.interactions[0] if len(args.interactions) == 1 else args.interactions
    if args.items:
        d["items"] = args.items[0] if len(args.items) == 1 else args.items
    for flag, key in (("format", "format"), ("reviews", "reviews"), ("meta", "meta"), ("skip_bad_lines", "skip_bad_lines"),
                      ("domains", "domains"), ("time_min", "time_min"), ("time_max", "time_max"), ("min_user", "min_user"),
                      ("min_item", "min_item"), ("duplicates", "duplicates"), ("repeats", "repeats"), ("max_history", "max_history")):
        value = getattr(args, flag)
        if value is not None:
            d[key] = value
    if args.domain_map:
        d["domain_map"] = _domain_map(args.domain_map)
    if args.douban:
        if args.interactions or args.format not in (None, "douban"):
            raise CliError("--douban DIR names the input and its format: drop --interactions / --format")
        d["format"], d["interactions"] = "douban", args.douban
    return cfg


def run(args: argparse.Namespace) -> int:
    from llm4cdsr.data.dataset import DatasetError, PreparedDataset
    from llm4cdsr.data.prepare import dataset_stats, format_stats, is_current, run_prepare
    from llm4cdsr.io import read_json
    from llm4cdsr.workspace import Workspace

    cfg = config_from_args(args, adjust=lambda c: apply_flags(c, args))
    folder = Workspace(cfg["workspace"]).dataset_dir
    if not args.force and is_current(cfg):
        try:
            stats = read_json(folder / "stats.json")
        except FileNotFoundError:
            stats = dataset_stats(PreparedDataset.load(folder))
        print(f"dataset is current (same inputs and options): {folder}  (--force prepares it again)")
        print(format_stats(stats))
        return 0
    start = time.perf_counter()
    try:
        ds = run_prepare(cfg, force=True, progress=not args.no_progress)
    except DatasetError as e:
        raise CliError(str(e)) from e
    report = ds.meta["prepare_report"]
    print(f"dataset: {folder}  ({ds.meta['source']['format']}, read by {ds.meta.get('engine', 'python')}, "
          f"{time.perf_counter() - start:.1f} s)")
    for step in report["steps"]:
        print(f"  {step['step']:<40} {step['users']:>10,} users {step['interactions']:>12,} interactions")
    for key in ("items_without_metadata", "bad_lines_skipped"):
        if report.get(key):
            print(f"  {key.replace('_', ' ')}: {report[key]}")
    if report.get("first_bad_line"):
        for where in report["first_bad_line"].values():
            print(f"    first: {where}")
    print(format_stats(read_json(folder / "stats.json")))
    return 0
