"""`llm4cdsr run`: the whole job on a config (built-in defaults: the synthetic demo world)."""
from __future__ import annotations

import argparse

from llm4cdsr.cli.common import add_config_args, config_from_args
from llm4cdsr.data.dataset import SYNTHETIC_NOTE
from llm4cdsr.io import read_json
from llm4cdsr.workspace import Workspace


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="prepare, embed, profile, train, evaluate and report in one go",
        description="Run every stage on a config, skipping stages whose artifacts are current. "
                    "With no config: the built-in synthetic two-domain world, the packaged embedding model, template profiles.",
    )
    add_config_args(p)
    p.add_argument("--run-name", help="run folder name under <workspace>/runs (sets run.name)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="redo this stage even if current (repeatable: prepare, embed, profile, train, report)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Imported here: every command's parser is built at start-up, and the pipeline brings torch,
    # scikit-learn and matplotlib (torch alone: 1.7 s of CPU, measured).
    from llm4cdsr.pipeline import run_pipeline

    if args.run_name:
        args.overrides.append(f"run.name={args.run_name}")
    if args.force:
        args.overrides.append(f"run.force=[{','.join(args.force)}]")
    cfg = config_from_args(args)
    run_dir = run_pipeline(cfg)
    report = run_dir / "report" / "index.html"
    print(f"run folder: {run_dir}")
    if report.is_file():
        print(f"report: {report}")
    meta = Workspace(cfg["workspace"]).dataset_dir / "meta.json"
    if meta.is_file() and read_json(meta).get("synthetic"):
        print(f"note: {SYNTHETIC_NOTE}")
    return 0
