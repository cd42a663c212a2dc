"""`llm4cdsr synth`: write a synthetic two-domain world as generic tables (for demos and tests)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth", help="write a SYNTHETIC two-domain world (interactions.csv, items.csv, synth.json)",
        description="Generate a synthetic world (latent tastes spanning two domains, titles that follow taste, "
                    "sequential histories) and write it in the generic table form. Data prepared from it is "
                    "marked synthetic. See llm4cdsr.data.synth.",
    )
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--users", type=int, default=2000, help="number of users (default 2000)")
    p.add_argument("--items-a", type=int, default=400, help="items of domain A (default 400)")
    p.add_argument("--items-b", type=int, default=600, help="items of domain B (default 600)")
    p.add_argument("--overlap", type=float, default=0.3, help="share of users with both domains (default 0.3)")
    p.add_argument("--domains", nargs=2, default=["books", "movies"], metavar=("A", "B"), help="domain names (default books movies)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llm4cdsr.cli.common import CliError
    from llm4cdsr.data.synth import write_world

    try:
        out = write_world(args.out, n_users=args.users, n_items=(args.items_a, args.items_b), overlap=args.overlap,
                          domains=tuple(args.domains), seed=args.seed)
    except ValueError as e:
        raise CliError(str(e)) from e
    print(f"wrote SYNTHETIC data (not a real benchmark) to {out}: interactions.csv, items.csv, synth.json")
    print(f"prepare it with: llm4cdsr prepare --interactions {out} --out WORKSPACE")
    return 0
