"""`llm4cdsr evaluate`: score a finished run's best weights again, optionally with other eval settings."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from llm4cdsr.cli.common import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluate a run's best weights (sampled and full ranking)",
        description="Load a run's best weights and evaluate them on validation and test in both modes. "
                    "eval.* overrides (e.g. eval.num_negatives=50) change the protocol; the run folder is not changed.",
    )
    p.add_argument("run_dir", metavar="RUN", help="run folder (<workspace>/runs/<name>)")
    p.add_argument("overrides", nargs="*", metavar="eval.KEY=VALUE", help="evaluation overrides")
    p.add_argument("--workspace", "-w", metavar="DIR", help="workspace holding the dataset (default: the run's)")
    p.add_argument("--output", "-o", metavar="FILE", help="also write the full results (with groups) as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llm4cdsr.cli.train import format_results
    from llm4cdsr.config import ConfigError, load_config
    from llm4cdsr.training.candidates import CandidateError
    from llm4cdsr.training.run import RunError, evaluate_run
    from llm4cdsr.validation import validate_config

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CliError(f"{run_dir}: not a run folder (no config.yaml)")
    for text in args.overrides:
        if not text.startswith("eval."):
            raise CliError(f"only eval.* settings can change at evaluation, got {text!r}")
    try:
        cfg = validate_config(load_config([run_dir / "config.yaml"], args.overrides), "evaluate")
    except ConfigError as e:
        raise CliError(str(e)) from e
    try:
        summaries = evaluate_run(run_dir, cfg["eval"], Path(args.workspace) if args.workspace else None)
    except (RunError, CandidateError) as e:
        raise CliError(str(e)) from e
    print(f"run: {run_dir}")
    print(f"sampled candidates scored: {summaries['sampled_scoring']}")
    for stage in ("valid", "test"):
        print(format_results(summaries, stage).replace(" (best epoch -)", ""))
    if args.output:
        Path(args.output).write_text(json.dumps(summaries, indent=2) + "\n", encoding="utf-8")
    return 0
