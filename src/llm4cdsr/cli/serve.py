"""`llm4cdsr serve RUN`: an HTTP JSON recommendation endpoint (needs the serve extra)."""
from __future__ import annotations

import argparse
import importlib.util

from llm4cdsr.cli.common import CliError


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve recommendations over HTTP (FastAPI + uvicorn)",
                              description="Load the run once and answer POST /recommend and GET /health at "
                                          "http://127.0.0.1:8000 unless --host / --port say otherwise.")
    p.add_argument("run", help="run folder (<workspace>/runs/<name>)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Checked before the run loads (seconds): a wrong port or a missing extra costs nothing.
    if not 1 <= args.port <= 65535:
        raise CliError(f"--port {args.port}: a TCP port is 1-65535")
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise CliError(f"serve needs {' and '.join(missing)}, from the serve extra: pip install -e \".[serve]\" "
                       "(or pip install 'llm4cdsr[serve]')")
    # Imported here: every command's parser is built at start-up, and these bring torch and FastAPI.
    from llm4cdsr.recommender import TrainedRecommender
    from llm4cdsr.serve import serve

    # load refuses an unfinished run and a run whose dataset changed, in one line (ArtifactError).
    serve(TrainedRecommender.load(args.run), host=args.host, port=args.port)
    return 0
