"""`llm4cdsr serve RUN`: an HTTP JSON recommendation endpoint (needs the serve extra)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve recommendations over HTTP (FastAPI + uvicorn)",
                              description="Load the run once and answer POST /recommend and GET /health at "
                                          "http://127.0.0.1:8000 unless --host / --port say otherwise.")
    p.add_argument("run", help="run folder (<workspace>/runs/<name>)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Imported here: every command's parser is built at start-up, and these bring torch and FastAPI.
    from llm4cdsr.recommender import TrainedRecommender
    from llm4cdsr.serve import serve

    serve(TrainedRecommender.load(args.run), host=args.host, port=args.port)
    return 0
