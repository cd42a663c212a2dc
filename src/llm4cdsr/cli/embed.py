"""`llm4cdsr embed`: item texts -> LLM embeddings -> PCA views, into <workspace>/embeddings/."""
from __future__ import annotations

import argparse
import json

from llm4cdsr.cli.common import CliError, add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed", help="embed item texts with the configured model and fit the PCA views",
        description="Embed every item's text (cached, resumable), fit global and per-domain PCA, and write "
                    "<workspace>/embeddings/. Skipped when the artifacts match the config and dataset.",
    )
    add_config_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if the artifacts are current (cached calls are reused)")
    add_batch_args(p.add_mutually_exclusive_group(), p, "the item embeddings the cache lacks (embed.backend=openai)")
    p.set_defaults(func=run)


def add_batch_args(group: argparse._MutuallyExclusiveGroup, parser: argparse.ArgumentParser, what: str) -> None:
    """--write-batch / --read-batch and the shard sizes (shared by `embed` and `profile`)."""
    group.add_argument("--write-batch", metavar="DIR",
                       help=f"write {what} as OpenAI batch JSONL files under DIR/<round>/, and stop (no call is made)")
    group.add_argument("--read-batch", metavar="DIR",
                       help="import the batch result files under DIR (every *.jsonl but requests-*) into the call cache")
    parser.add_argument("--shard-requests", type=int, default=50_000, metavar="N",
                        help="--write-batch: at most N requests per file (default 50000, OpenAI's limit)")
    parser.add_argument("--shard-mb", type=float, default=200.0, metavar="MB",
                        help="--write-batch: at most MB megabytes per file (default 200, OpenAI's limit)")


def batch_command(args: argparse.Namespace, cfg: dict, stage: str) -> int:
    """--write-batch or --read-batch of `stage` (embed | profile)."""
    from llm4cdsr.llm.batch import BatchError
    from llm4cdsr.llm.stages import read_batch, write_embed_batch, write_profile_batch

    try:
        if args.read_batch:
            report = read_batch(cfg, args.read_batch)
            print(json.dumps(report, indent=2))
            print(f"next: `llm4cdsr {stage} --write-batch {args.read_batch}` for the calls still missing (the next round), "
                  f"or `llm4cdsr {stage}` once none is")
            return 0
        write = write_embed_batch if stage == "embed" else write_profile_batch
        out = write(cfg, args.write_batch, args.shard_requests, args.shard_mb)
    except (BatchError, OSError) as e:
        raise CliError(str(e)) from e
    if out["round"] is None:
        print(out["next"])
        return 0
    print(f"{stage}: wrote {out['requests']:,} {out['kind']} requests of round {out['round']!r} in "
          f"{len(out['shards'])} file(s) under {out['folder']} (model {out['model']}; no API key is in them)")
    print(f"next: send each requests-*.jsonl to a batch endpoint (OpenAI Batch API with url {out['url']}, or vLLM's "
          f"run_batch), put the result files in {out['folder']}, then `llm4cdsr {stage} --read-batch {args.write_batch}`")
    return 0


def run(args: argparse.Namespace) -> int:
    from llm4cdsr.llm.http import LLMError
    from llm4cdsr.llm.stages import run_embed

    cfg = config_from_args(args)
    if args.write_batch or args.read_batch:
        return batch_command(args, cfg, "embed")
    try:
        meta = run_embed(cfg, force=args.force)
    except LLMError as e:
        raise CliError(str(e)) from e
    pca = meta["pca"]
    print(f"embeddings: {meta['n_items']} items x {meta['dim']} ({meta['model']}); "
          f"global PCA {pca['global']['dim']}-d, local PCA "
          + ", ".join(f"{k.split('.', 1)[1]} {v['dim']}-d" for k, v in pca.items() if k.startswith("local."))
          + f"; config {meta['config_hash']}; {meta['time_s']['total']} s")
    return 0
