"""Item texts: one domain-aware template per domain over whatever attributes an item has.

A template is a format string with optional segments in square brackets:

    "The {domain} item has the following attributes: name is {title}[; brand is {brand}]."

A bracketed segment is kept only when every field it names has a non-empty value, so missing
attributes vanish with their wording instead of leaving "brand is ;" behind. Fields outside
brackets that are missing become "". Values come from the items table; `{domain}` is the
domain name. Each value is cut to `max_field_chars` and the whole text to `max_chars`, so one
long description cannot crowd out the title (embedding models truncate at a token budget).
"""
from __future__ import annotations

import html
import math
import re
import string
from functools import lru_cache
from typing import Any, Iterable

import pandas as pd

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_SPACES = re.compile(r"\s+")


class TemplateError(ValueError):
    """A text template is malformed; the message quotes it."""


def _fields(fmt: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(fmt) if name]
    except ValueError as e:
        raise TemplateError(f"bad item text template {fmt!r}: {e}") from e


@lru_cache(maxsize=64)
def _compile(template: str) -> tuple[tuple[str, tuple[str, ...], bool], ...]:
    """Split a template into (format, fields, optional) parts."""
    parts: list[tuple[str, tuple[str, ...], bool]] = []
    pos = 0
    for m in _SEGMENT.finditer(template):
        if m.start() > pos:
            fixed = template[pos : m.start()]
            parts.append((fixed, tuple(_fields(fixed)), False))
        parts.append((m.group(1), tuple(_fields(m.group(1))), True))
        pos = m.end()
    if pos < len(template):
        fixed = template[pos:]
        parts.append((fixed, tuple(_fields(fixed)), False))
    for fmt, _, _ in parts:
        if "[" in fmt or "]" in fmt:
            raise TemplateError(f"item text template {template!r}: unbalanced or nested [ ]")
    return tuple(parts)


def clean_value(value: Any, max_chars: int) -> str:
    """A table cell as one line of text; None/NaN/empty lists become ""."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
        seq = value.tolist() if hasattr(value, "tolist") else value
        if isinstance(seq, list):
            value = ", ".join(clean_value(v, max_chars) for v in seq if clean_value(v, max_chars))
    # Scraped catalogues carry HTML entities ("&#153;", "&amp;"); the model should read the character.
    text = _SPACES.sub(" ", html.unescape(str(value))).strip()
    if text.lower() in ("nan", "none", "null"):
        return ""
    if max_chars and len(text) > max_chars:
        text = text[:max_chars].rstrip() + "..."
    return text


def render(template: str, values: dict[str, str], max_chars: int = 0) -> str:
    """Fill a template; optional segments with an empty field are dropped."""
    out = []
    for fmt, names, optional in _compile(template):
        if optional and any(not values.get(n) for n in names):
            continue
        out.append(fmt.format_map({n: values.get(n, "") for n in names}))
    text = _SPACES.sub(" ", "".join(out)).strip()
    if max_chars and len(text) > max_chars:
        text = text[:max_chars].rstrip()
    return text


def template_for(domain: str, cfg_embed: dict) -> str:
    templates = cfg_embed.get("templates") or {}
    return templates.get(domain) or cfg_embed["template"]


def item_texts(items: pd.DataFrame, cfg: dict) -> list[str]:
    """One text per row of an items table (columns: domain, title, optional brand, price, ...).

    `cfg` is the full config (its `embed` section is used) or the `embed` section itself. Works
    for any items table, including items never seen in training.
    """
    emb = cfg["embed"] if "embed" in cfg else cfg
    max_field = int(emb["max_field_chars"])
    max_chars = int(emb["max_chars"])
    columns = [c for c in items.columns if c not in ("global_id", "local_id", "raw_id")]
    records: Iterable[dict] = items[columns].to_dict("records")
    texts = []
    for rec in records:
        domain = str(rec.get("domain", ""))
        values = {k: clean_value(v, max_field) for k, v in rec.items()}
        values["domain"] = domain
        texts.append(render(template_for(domain, emb), values, max_chars))
    return texts
