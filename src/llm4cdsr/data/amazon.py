"""Streaming import of Amazon review dumps (McAuley lab), two categories as the two domains.

2018 format: reviews `<Category>[_5].json.gz`, one JSON object per line with reviewerID, asin,
unixReviewTime (seconds); metadata `meta_<Category>.json.gz` with asin, title, brand, price,
category (list), description (list), feature (list).
2023 format: reviews `<Category>.jsonl[.gz]` with user_id, parent_asin, timestamp (milliseconds);
metadata `meta_<Category>.jsonl[.gz]` with parent_asin, title, store, price, categories, features,
description.

The dumps run to gigabytes, so they are read line by line: each review keeps only two integer
codes and a timestamp (ids are dictionary-encoded as they arrive), and the metadata pass keeps
only the items the reviews mention.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import re
from array import array
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
import pandas as pd
from tqdm import tqdm

from llm4cdsr.data.errors import DataError
from llm4cdsr.data.raw import MAX_ID_CHARS, RawData, check_items, listing

# Field names per format version: user, item, time, metadata item id.
FIELDS = {
    "2018": {"user": "reviewerID", "item": "asin", "time": "unixReviewTime", "meta_item": "asin", "unit": "s"},
    "2023": {"user": "user_id", "item": "parent_asin", "time": "timestamp", "meta_item": "parent_asin", "unit": "ms"},
}
# Metadata per version: items-table column -> (field of the dump, separator joining a list value).
META_FIELDS = {
    "2018": {"title": ("title", " "), "brand": ("brand", " "), "price": ("price", " "), "categories": ("category", " > "),
             "description": ("description", " "), "features": ("feature", "; ")},
    "2023": {"title": ("title", " "), "brand": ("store", " "), "price": ("price", " "), "categories": ("categories", " > "),
             "description": ("description", " "), "features": ("features", "; ")},
}
# Long descriptions are cut here: item texts are truncated far shorter later, and this bounds memory.
MAX_TEXT_CHARS = 2000
PROGRESS_EVERY = 20_000  # lines between progress-bar updates (updating per line costs more than parsing)


def domain_name(path: str | Path) -> str:
    """'reviews_Grocery_and_Gourmet_Food_5.json.gz' -> 'Grocery_and_Gourmet_Food'."""
    name = Path(path).name
    name = re.sub(r"(\.jsonl?|\.json)?(\.gz)?$", "", name)
    name = re.sub(r"^(reviews_|meta_)", "", name)
    return re.sub(r"_5$", "", name)


@contextlib.contextmanager
def open_lines(path: str | Path, desc: str, progress: bool = True) -> Iterator[Iterator[tuple[int, bytes]]]:
    """(line number, raw line) pairs of a plain or gzip file, with a progress bar over file bytes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{desc} file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as raw:
        stream: BinaryIO = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
        bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"{desc} {path.name}", disable=not progress, leave=False)

        def lines() -> Iterator[tuple[int, bytes]]:
            lineno = 0
            try:
                for line in stream:
                    lineno += 1
                    if lineno % PROGRESS_EVERY == 0:
                        bar.update(raw.tell() - bar.n)
                    yield lineno, line
            except (OSError, EOFError) as e:  # truncated or corrupt gzip
                raise DataError(f"{path}: unreadable after line {lineno}: {e}") from e
            bar.update(size - bar.n)

        try:
            yield lines()
        finally:
            bar.close()


class _BadLines:
    """Counts malformed lines when skipping is on, else raises on the first one."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.count: dict[str, int] = {}
        self.first: dict[str, str] = {}

    def __call__(self, path: Path, lineno: int, why: str) -> None:
        where = f"{path}:{lineno}"
        if not self.skip:
            raise DataError(f"{where}: {why} (pass --skip-bad-lines / data.skip_bad_lines=true to skip such lines)")
        key = str(path)
        self.count[key] = self.count.get(key, 0) + 1
        self.first.setdefault(key, f"{where}: {why}")

    def note(self, notes: dict[str, Any]) -> None:
        """Record the skipped lines, if any, in an importer's notes."""
        if self.count:
            notes["bad_lines_skipped"] = self.count
            notes["first_bad_line"] = self.first


def json_records(path: Path, desc: str, progress: bool, bad: _BadLines) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line of a JSON-lines file; malformed lines go to `bad`."""
    with open_lines(path, desc, progress) as lines:
        for lineno, line in lines:
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                bad(path, lineno, f"malformed JSON ({e.msg})")


def detect_version(path: str | Path) -> str:
    """'2018' or '2023', from the fields of the first record."""
    with open_lines(path, "reviews", progress=False) as lines:
        for lineno, line in lines:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); cannot tell the dump format") from e
            if isinstance(rec, dict) and "reviewerID" in rec:
                return "2018"
            if isinstance(rec, dict) and "user_id" in rec and ("parent_asin" in rec or "asin" in rec):
                return "2023"
            keys = ", ".join(list(rec)[:8]) if isinstance(rec, dict) else type(rec).__name__
            raise DataError(f"{path}:{lineno}: neither the 2018 (reviewerID, asin, unixReviewTime) nor the 2023 "
                            f"(user_id, parent_asin, timestamp) review format; fields: {keys}")
    raise DataError(f"{path}: empty file")


def _text(value: Any, sep: str = " ") -> str:
    """Metadata values are strings, lists of strings or numbers; flatten to one bounded line."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = sep.join(_text(v) for v in value if v not in (None, ""))
    text = " ".join(str(value).split())
    return text[:MAX_TEXT_CHARS]


def meta_row(rec: dict, version: str) -> dict[str, str]:
    """The items-table text columns of one metadata record."""
    return {column: _text(rec.get(field), sep) for column, (field, sep) in META_FIELDS[version].items()}


def review_setup(reviews: list[str | Path], version: str) -> tuple[str, list[str]]:
    """(format version, domain name per review dump), checking that there are two categories."""
    if len(reviews) != 2:
        raise DataError(f"data.reviews: give exactly two review dumps, one per domain (got {len(reviews)})")
    if version == "auto":
        version = detect_version(reviews[0])
    if version not in FIELDS:
        raise DataError(f"Amazon format version must be 2018 or 2023, got {version!r}")
    domains = [domain_name(p) for p in reviews]
    if domains[0] == domains[1]:
        raise DataError(f"data.reviews: both dumps are named {domains[0]!r}; give two categories")
    return version, domains


def read_amazon(reviews: list[str | Path], meta: list[str | Path], version: str = "auto",
                skip_bad_lines: bool = False, progress: bool = True) -> RawData:
    """Two review dumps (one per domain) and their metadata dumps -> RawData."""
    version, domains = review_setup(reviews, version)
    f = FIELDS[version]
    bad = _BadLines(skip_bad_lines)

    user_code: dict[str, int] = {}
    item_code: dict[str, int] = {}
    item_domain = array("b")
    users, items, times = array("i"), array("i"), array("q")
    cross: list[str] = []
    for d, path in enumerate(reviews):
        path = Path(path)
        for lineno, rec in json_records(path, "reviews", progress, bad):
            try:
                u, it, t = rec[f["user"]], rec[f["item"]], rec[f["time"]]
            except (KeyError, TypeError) as e:
                bad(path, lineno, f"missing field {e}")
                continue
            if not isinstance(t, (int, float)) or isinstance(t, bool):
                try:
                    t = int(t)
                except (TypeError, ValueError):
                    bad(path, lineno, f"'{f['time']}' is not a number: {t!r}")
                    continue
            u, it = str(u), str(it)
            if len(u) > MAX_ID_CHARS or len(it) > MAX_ID_CHARS:
                which = f["user"] if len(u) > MAX_ID_CHARS else f["item"]
                bad(path, lineno, f"'{which}' is longer than {MAX_ID_CHARS} characters; ids are keys, not text")
                continue
            code = item_code.setdefault(it, len(item_code))
            if code == len(item_domain):
                item_domain.append(d)
            elif item_domain[code] != d and len(cross) < 1000:
                cross.append(str(it))
            users.append(user_code.setdefault(str(u), len(user_code)))
            items.append(code)
            times.append(int(t))
    if cross:
        raise DataError(
            f"{reviews[0]} and {reviews[1]}: item id(s) duplicated across domains: {listing(sorted(set(cross)))}; "
            "item ids must be unique over both domains"
        )
    if not items:
        raise DataError(f"{reviews[0]}, {reviews[1]}: no reviews read")

    # Metadata: one pass per file, keeping only items the reviews mention; first row wins.
    meta_rows: dict[int, dict[str, str]] = {}
    for path in meta:
        path = Path(path)
        for lineno, rec in json_records(path, "metadata", progress, bad):
            if not isinstance(rec, dict) or f["meta_item"] not in rec:
                bad(path, lineno, f"missing field '{f['meta_item']}'")
                continue
            code = item_code.get(str(rec[f["meta_item"]]))
            if code is not None and code not in meta_rows:
                meta_rows[code] = meta_row(rec, version)

    n = len(item_code)
    columns = list(META_FIELDS[version])
    empty = dict.fromkeys(columns, "")
    table = pd.DataFrame([meta_rows.get(c, empty) for c in range(n)], columns=columns)
    table.insert(0, "domain", np.asarray(domains, dtype=object)[np.frombuffer(item_domain, dtype=np.int8)])
    table.insert(0, "item_id", np.asarray(list(item_code), dtype=object))
    check_items(table, f"{reviews[0]}, {reviews[1]}")
    notes: dict[str, Any] = {"items_without_metadata": int(n - len(meta_rows))}
    bad.note(notes)
    return RawData.from_streamed(user_code, users, items, times, table, f["unit"],
                                 {"format": f"amazon{version}", "files": [str(p) for p in [*reviews, *meta]]}, notes)
