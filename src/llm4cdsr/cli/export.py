"""`llm4cdsr export`: write a prepared dataset in another library's format."""
from __future__ import annotations

import argparse

from llm4cdsr.cli.common import add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export the prepared dataset (RecBole atomic files)",
        description="Write <workspace>/dataset/ as RecBole atomic files: <name>.inter/.item with a domain field, and "
                    "one <name>_<domain>/ dataset per domain (RecBole-CDR's source/target layout).",
    )
    add_config_args(p)
    p.add_argument("--format", choices=["recbole"], default="recbole", help="output format (default recbole)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--name", default="cdsr", help="dataset name, the stem of the written files (default cdsr)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llm4cdsr.data.dataset import PreparedDataset
    from llm4cdsr.data.recbole import export_recbole
    from llm4cdsr.workspace import Workspace

    cfg = config_from_args(args)
    ds = PreparedDataset.load(Workspace(cfg["workspace"]).dataset_dir)
    paths = export_recbole(ds, args.out, args.name)
    print(f"wrote {len(paths)} RecBole files to {args.out}:")
    for path in paths:
        print(f"  {path}")
    return 0
