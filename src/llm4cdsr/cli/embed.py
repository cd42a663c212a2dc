"""`llm4cdsr embed`: item texts -> LLM embeddings -> PCA views, into <workspace>/embeddings/."""
from __future__ import annotations

import argparse

from llm4cdsr.cli.common import CliError, add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed", help="embed item texts with the configured model and fit the PCA views",
        description="Embed every item's text (cached, resumable), fit global and per-domain PCA, and write "
                    "<workspace>/embeddings/. Skipped when the artifacts match the config and dataset.",
    )
    add_config_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if the artifacts are current (cached calls are reused)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llm4cdsr.llm.http import LLMError
    from llm4cdsr.llm.stages import run_embed

    cfg = config_from_args(args)
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
