"""Arguments every subcommand shares: config files, dotted overrides, the workspace."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from llm4cdsr.config import PRESET_DIR, ConfigError, load_config
from llm4cdsr.data.dataset import DatasetError
from llm4cdsr.data.errors import DataError
from llm4cdsr.locks import LockError
from llm4cdsr.validation import validate_config
from llm4cdsr.workspace import ArtifactError


class CliError(Exception):
    """An error to show the user as one clear line (no traceback)."""


# Errors whose message already says what is wrong and where; shown without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DatasetError, DataError, ArtifactError, FileNotFoundError,
                                                LockError)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                        help="YAML config or preset name (repeatable; later files win)")
    parser.add_argument("--workspace", "-w", metavar="DIR", help="workspace folder (overrides workspace=)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. train.lr=5e-4 model.hidden=64")


def config_from_args(args: argparse.Namespace, adjust: Callable[[dict], dict] | None = None) -> dict[str, Any]:
    """The resolved config (`adjust`: a command's flags applied to it), validated as a whole
    before the command makes any folder."""
    overrides = list(args.overrides)
    if getattr(args, "workspace", None):
        overrides.append(f"workspace={args.workspace}")
    try:
        cfg = load_config(args.config, overrides)
        if adjust is not None:
            cfg = adjust(cfg)
        return validate_config(cfg, getattr(args, "command", None))
    except ConfigError as e:
        message = str(e)
        if message.startswith("config file not found"):  # most often a misspelt preset name
            presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
            message += f"; the presets are: {', '.join(presets) or '(none)'}"
        raise CliError(message) from e
