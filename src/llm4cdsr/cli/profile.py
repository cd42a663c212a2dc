"""`llm4cdsr profile`: hierarchical user profiles and their embeddings, into <workspace>/<profile.output>/."""
from __future__ import annotations

import argparse
import json

from llm4cdsr.cli.common import CliError, add_config_args, config_from_args
from llm4cdsr.cli.embed import add_batch_args, batch_command


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile", help="build user profiles (LLM or template) and embed them",
        description="Cluster items, profile each user's training history per cluster (analyzer) and overall "
                    "(summarizer), embed the profiles. Chat calls are cached and resumable. "
                    "profile.backend=template calls no LLM.",
    )
    add_config_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if the artifacts are current (cached calls are reused)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the chat calls and tokens a run would spend, and stop")
    add_batch_args(mode, p, "the next round of calls the cache lacks (analyses, then summaries, then the profiles' "
                            "embeddings with embed.backend=openai)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llm4cdsr.llm.http import LLMError
    from llm4cdsr.llm.stages import dry_run_profile, run_profile

    cfg = config_from_args(args)
    if args.write_batch or args.read_batch:
        return batch_command(args, cfg, "profile")
    try:
        if args.dry_run:
            print(json.dumps(dry_run_profile(cfg), indent=2))
            return 0
        meta = run_profile(cfg, force=args.force)
    except LLMError as e:
        raise CliError(str(e)) from e
    print(f"profiles: {meta['n_users']} users, source {meta['source']}, chat model {meta['chat_model']}, "
          f"embedded with {meta['embed_model']} ({meta['dim']}-d); config {meta['config_hash']}")
    return 0
