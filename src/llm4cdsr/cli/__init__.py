"""The `llm4cdsr` command. Each subcommand lives in its own module of this package and exposes
`register(subparsers)`; modules are discovered, so adding a command touches no shared list."""
from __future__ import annotations

import os

# Before torch loads: OpenMP threads that spin while waiting made evaluation 4x slower on a shared
# 2-core machine (49 s instead of 12 s); passive waiting costs little on a dedicated one. A value
# the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import pkgutil  # noqa: E402
import sys  # noqa: E402

from llm4cdsr import __version__  # noqa: E402
from llm4cdsr.cli.common import USER_ERRORS, CliError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm4cdsr",
        description="LLM-enhanced cross-domain sequential recommendation: prepare, embed, profile, train, evaluate, recommend, report.",
    )
    parser.add_argument("--version", action="version", version=f"llm4cdsr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "common":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


# Commands that end by leaving the process at once (after flushing), when run as a program: the
# interpreter's teardown of torch costs 0.4-0.6 s (measured on an idle 2-core machine: `import torch`
# then exit 2.0-2.4 s, with os._exit 1.6-1.8 s), a sixth of a one-off `recommend`, which has nothing
# left to clean up (its outputs are written and closed, it holds no lock, thread or connection).
QUICK_EXIT = ("recommend",)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    rc = _dispatch(parser, args)
    if argv is None and args.command in QUICK_EXIT:  # a process of its own, not a call from Python
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:  # a closed pipe (`| head`): nothing more can reach it
                pass
        logging.shutdown()
        os._exit(rc)
    return rc


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, with KEY=VALUE overrides accepted anywhere on the line: argparse takes a
    positional list only in one piece, so `model.name=pop --run-name x seed=43` left `seed=43` over
    and failed with the top-level usage."""
    args, rest = parser.parse_known_args(argv)
    if rest:
        overrides = [a for a in rest if "=" in a and not a.startswith("-")]
        others = [a for a in rest if a not in overrides]
        if overrides and isinstance(getattr(args, "overrides", None), list) and not others:
            args.overrides.extend(overrides)
        else:
            sub = getattr(args, "command", None)
            hint = "" if not overrides or isinstance(getattr(args, "overrides", None), list) else \
                f"; `llm4cdsr {sub}` takes no KEY=VALUE overrides"
            parser.error(f"unrecognized arguments: {' '.join(rest)}{hint}")
    return args


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CliError, *USER_ERRORS) as e:
        print(f"llm4cdsr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only or full disk, a path through a file: the file and the reason, no traceback
        if args.verbose:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"llm4cdsr {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llm4cdsr {args.command}: interrupted; finished work is kept, run the command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
