"""Layered YAML configuration: package defaults < preset file < user file < command line.

Each component owns its defaults in `defaults/<section>.yaml` (every key with an inline comment
giving its type and meaning). A config file may name another with `base: other.yaml` (relative to
itself, or a preset name from `configs/`), which it then overrides. Command-line overrides are
dotted: `train.lr=5e-4`. Unknown keys and values of the wrong type are errors that name the key
and the file they came from.
"""
from __future__ import annotations

import copy
import ipaddress
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import yaml

from llm4cdsr.io import stable_hash

# Presets shipped with the repository (configs/ at the repository root).
PRESET_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the source."""


class _ConfigLoader(yaml.SafeLoader):
    """YAML as configs are read: no aliases (a "billion laughs" of nested aliases expands without bound,
    and a config has no need of them) and no duplicate keys (YAML would silently keep the last)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, f"alias *{event.anchor} is not accepted in a config (write the value out)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_yaml(text: str, source: str) -> Any:
    """Config YAML (see _ConfigLoader); an error is one ConfigError line naming `source` and the place."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML: {problem}{where}") from None


# An environment variable's name: what `*.api_key_env` must hold (a pasted key is refused unseen).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Set to 1 to send an API key over plain http to a host that is not this machine.
ALLOW_HTTP_KEY = "LLM4CDSR_ALLOW_HTTP_KEY"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def key_transport_problem(base_url: str, api_key_env: str, key_name: str) -> str | None:
    """Why the key in $api_key_env must not go to `base_url`: plain http to another machine (anyone on
    the way reads it), unless $LLM4CDSR_ALLOW_HTTP_KEY=1 says so. None when there is no key to send."""
    if not api_key_env or not os.environ.get(api_key_env):
        return None
    url = urlsplit(base_url)
    if url.scheme == "http" and not is_loopback(url.hostname or "") and os.environ.get(ALLOW_HTTP_KEY) != "1":
        return (f"{key_name}: ${api_key_env} would go over plain http to {url.hostname}, readable on the way; use "
                f"https, or set {ALLOW_HTTP_KEY}=1 to send it anyway")
    return None


def default_config() -> dict[str, Any]:
    """All sections' package defaults, merged into one nested dict."""
    cfg: dict[str, Any] = {}
    folder = resources.files("llm4cdsr") / "defaults"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".yaml"):
            continue
        section = entry.name[: -len(".yaml")]
        data = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        if section == "top":  # keys that live at the top level (workspace, seed, ...)
            cfg.update(data)
        else:
            cfg[section] = data
    return cfg


def resolve_preset(name: str | Path, relative_to: Path | None = None) -> Path:
    """A config path, tried as given, relative to the including file, then as a preset name."""
    candidates = [Path(name)]
    if relative_to is not None:
        candidates.append(relative_to.parent / name)
    stem = Path(name).name
    candidates += [PRESET_DIR / stem, PRESET_DIR / f"{stem}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"config file not found: {name!s} (also looked in {PRESET_DIR})")


def _read_file(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict, str]]:
    """The layers a file contributes, base first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    data = load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    layers: list[tuple[dict, str]] = []
    base = data.pop("base", None)
    if base:
        layers += _read_file(resolve_preset(base, path), seen + (path,))
    layers.append((data, str(path)))
    return layers


def _check_type(key: str, default: Any, value: Any, source: str) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (int, float)) and isinstance(value, str):
        # YAML reads 1e-3 as a string; accept numbers written that way.
        try:
            return type(default)(float(value)) if isinstance(default, float) else int(value)
        except ValueError:
            pass
    if isinstance(default, list) and isinstance(value, (list, tuple)):
        return list(value)
    if type(default) is not type(value):
        raise ConfigError(
            f"{source}: {key} must be of type {type(default).__name__}, got {value!r}"
        )
    return value


def _merge(base: dict, layer: dict, source: str, prefix: str = "") -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base)) or "(none)"
            raise ConfigError(f"{source}: unknown key '{dotted}' (known here: {known})")
        default = base[key]
        if isinstance(default, dict) and default:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted} must be a mapping")
            _merge(default, value, source, dotted + ".")
        else:
            base[key] = _check_type(dotted, default, value, source)


def parse_override(text: str) -> dict:
    """`train.lr=5e-4` -> {'train': {'lr': 0.0005}} (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"command line: override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    value = load_yaml(raw, f"command line: {key}") if raw != "" else ""
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_config(files: Iterable[str | Path] = (), overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Resolve the layered config. Later layers win; every key must exist in the defaults."""
    cfg = default_config()
    for f in files:
        for layer, source in _read_file(resolve_preset(f)):
            _merge(cfg, layer, source)
    for text in overrides:
        _merge(cfg, parse_override(text), "command line")
    return cfg


def section_hash(cfg: dict, *sections: str) -> str:
    """Hash of the named sections only: what decides whether an artifact is stale."""
    return stable_hash({s: cfg.get(s) for s in sections})


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(copy.deepcopy(cfg), sort_keys=False, allow_unicode=True)


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str], source: str = "command line") -> dict[str, Any]:
    """A copy of a resolved config with dotted overrides (`model.alpha=0`) laid on top, checked like
    the command line's; `source` names where they came from in an error."""
    out = copy.deepcopy(cfg)
    for text in overrides:
        _merge(out, parse_override(text), source)
    return out
