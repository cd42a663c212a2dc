"""`prepare`: raw data (any supported format) -> a PreparedDataset in `<workspace>/dataset/`.

Order of operations (each on the merged two-domain data):
  1. domain mapping (data.domain_map) and domain order (data.domains, else sorted names)
  2. time window (data.time_min <= t < data.time_max)
  3. repeated (user, item) pairs (data.repeats)
  4. iterated k-core (data.min_user, data.min_item)
  5. most recent data.max_history interactions per user
  6. users with fewer than 3 interactions dropped (leave-one-out needs train, valid and test)
  7. items left without interactions dropped; ids assigned

Each history is ordered by time; equal times keep the input row order (a stable sort), so the
result never depends on the sort algorithm. Users are indexed by sorted raw id; each domain's
items get local ids 1..n_d by sorted raw id.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llm4cdsr.config import load_config
from llm4cdsr.data import filters
from llm4cdsr.data.dataset import FORMAT_VERSION, DatasetError, PreparedDataset, compute_stats
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.raw import RawData, from_tables, listing, read_tables
from llm4cdsr.io import stable_hash
from llm4cdsr.locks import folder_lock
from llm4cdsr.workspace import Workspace

log = logging.getLogger(__name__)

# Bump when the pipeline would turn the same inputs into a different dataset.
PIPELINE_VERSION = 1
MIN_HISTORY = 3
SYNTH_MARKER = "synth.json"


def default_data_config() -> dict[str, Any]:
    return load_config()["data"]


# ----- building -------------------------------------------------------------------------------
def _domain_codes(raw: RawData, domain_map: dict, order: list) -> tuple[tuple[str, str], np.ndarray]:
    """(domain names A, B) and, per item code, 0 / 1, or -1 for an item whose domain is dropped."""
    item_domains = raw.items["domain"].astype(str)
    if domain_map:
        mapped = item_domains.map(lambda d: domain_map.get(d, d))
        item_domains = mapped.where(mapped.notna(), None)
    used = pd.Series(item_domains.to_numpy()[np.unique(raw.item_codes)]).dropna()
    names = sorted(set(used.astype(str)))
    where = raw.source.get("files", ["input"])[0] if raw.source.get("files") else "input"
    if len(names) > 2:
        counts = used.value_counts()
        raise DataError(
            f"{where}: {len(names)} domain values ({listing(f'{k}: {v} items' for k, v in counts.items())}); "
            "the model takes exactly two domains: map them with data.domain_map, e.g. "
            "domain_map: {Books: books, Comics: books, Movies: movies} (null drops a value)"
        )
    if len(names) < 2:
        raise DataError(f"{where}: the interactions cover {len(names)} domain(s) ({', '.join(names) or 'none'}); two are needed")
    if order:
        order = [str(d) for d in order]
        if sorted(order) != names:
            raise DataError(f"data.domains = {order} does not name the data's domains {names}")
        names = order
    codes = np.full(len(item_domains), -1, dtype=np.int64)
    values = item_domains.to_numpy(dtype=object)
    codes[values == names[0]] = 0
    codes[values == names[1]] = 1
    return (names[0], names[1]), codes


def _count(users: np.ndarray, keep: np.ndarray) -> dict[str, int]:
    return {"interactions": int(keep.sum()), "users": int(np.unique(users[keep]).size)}


def build_dataset(raw: RawData, data_cfg: dict | None = None) -> PreparedDataset:
    """Apply the filters of the `data` config section to raw data and assign ids (in memory)."""
    cfg = default_data_config()
    cfg.update(data_cfg or {})
    if cfg["repeats"] not in filters.REPEAT_POLICIES:
        raise DataError(f"data.repeats must be one of {', '.join(filters.REPEAT_POLICIES)}, got {cfg['repeats']!r}")
    domains, item_domain = _domain_codes(raw, cfg.get("domain_map") or {}, list(cfg.get("domains") or []))

    # One stable sort up front (user by raw id, then time, ties by input row order); every
    # later step only masks, so that order carries through to the saved histories.
    user_rank = np.empty(len(raw.user_ids), dtype=np.int64)
    user_rank[np.argsort(raw.user_ids.astype(str), kind="stable")] = np.arange(len(raw.user_ids))
    order = np.lexsort((raw.times, user_rank[raw.user_codes]))
    users = user_rank[raw.user_codes][order]
    items = raw.item_codes[order]
    times = raw.times[order]

    steps: list[dict[str, Any]] = [{"step": "input", **_count(users, np.ones(len(users), dtype=bool))}]
    keep = item_domain[items] >= 0
    if not keep.all():
        steps.append({"step": "domain_map (dropped domains)", **_count(users, keep)})

    start = filters.time_bound(cfg.get("time_min"), raw.time_unit, raw.time_kind, "time_min")
    end = filters.time_bound(cfg.get("time_max"), raw.time_unit, raw.time_kind, "time_max")
    if start is not None or end is not None:
        keep &= filters.time_window(times, start, end)
        steps.append({"step": "time window", **_count(users, keep)})

    def apply(mask_of_kept: np.ndarray, name: str) -> None:
        idx = np.flatnonzero(keep)
        keep[idx[~mask_of_kept]] = False
        steps.append({"step": name, **_count(users, keep)})

    if cfg["repeats"] != "keep_all":
        apply(filters.repeats(users[keep], items[keep], cfg["repeats"]), f"repeats {cfg['repeats']}")
    if cfg["min_user"] > 0 or cfg["min_item"] > 0:
        apply(filters.kcore(users[keep], items[keep], cfg["min_user"], cfg["min_item"]),
              f"k-core users>={cfg['min_user']} items>={cfg['min_item']}")
    if cfg["max_history"] > 0:
        apply(filters.most_recent(users[keep], cfg["max_history"]), f"most recent {cfg['max_history']}")
    apply(filters.min_length(users[keep], MIN_HISTORY), f"users with >= {MIN_HISTORY} interactions")

    users, items, times = users[keep], items[keep], times[keep]
    if len(users) == 0:
        raise DataError("no interactions left after the filters (see data.time_min/time_max, min_user, min_item)")

    # Ids: users by sorted raw id (already their rank), items per domain by sorted raw id.
    kept_users, user_new = np.unique(users, return_inverse=True)
    user_ids = raw.user_ids[np.argsort(raw.user_ids.astype(str), kind="stable")][kept_users]
    kept_items = np.unique(items)
    dom = item_domain[kept_items]
    raw_item_ids = raw.items["item_id"].to_numpy(dtype=object)[kept_items].astype(str)
    # Domain A first, then raw id: the row order is the global id order.
    item_order = np.lexsort((raw_item_ids, dom))
    ordered = kept_items[item_order]
    n_a = int((dom == 0).sum())
    n_b = int((dom == 1).sum())
    global_of_code = np.zeros(len(raw.items), dtype=np.int64)
    global_of_code[ordered] = np.arange(1, len(ordered) + 1)

    table = raw.items.iloc[ordered].reset_index(drop=True)
    extra = [c for c in table.columns if c not in ("item_id", "domain", "title")]
    dom_sorted = item_domain[ordered]
    items_df = pd.DataFrame({
        "global_id": np.arange(1, len(ordered) + 1, dtype=np.int64),
        "domain": np.where(dom_sorted == 0, domains[0], domains[1]).astype(object),
        "local_id": np.where(dom_sorted == 0, np.arange(1, len(ordered) + 1), np.arange(1, len(ordered) + 1) - n_a).astype(np.int64),
        "raw_id": table["item_id"].astype(str).to_numpy(dtype=object),
        "title": table["title"].fillna("").astype(str).to_numpy(dtype=object),
    })
    for c in extra:
        items_df[c] = table[c].fillna("").astype(str).to_numpy(dtype=object)

    offsets = np.zeros(len(kept_users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_new, minlength=len(kept_users)), out=offsets[1:])
    seq_times = np.rint(times).astype(np.int64) if times.dtype.kind == "f" else times.astype(np.int64)

    empty_titles = int((items_df["title"].str.strip() == "").sum())
    meta = {
        "source": raw.source,
        "time_kind": raw.time_kind,
        "time_unit": raw.time_unit if raw.time_kind == "timestamp" else None,
        "synthetic": bool(raw.source.get("synthetic", False)),
        "pipeline_version": PIPELINE_VERSION,
        "prepare_report": {"steps": steps, "empty_titles": empty_titles,
                           "items_dropped": int(len(raw.items) - len(ordered)), **raw.notes},
    }
    ds = PreparedDataset(
        domains=domains,
        n_items=(n_a, n_b),
        items=items_df,
        user_ids=np.asarray(user_ids, dtype=object),
        seq_offsets=offsets,
        seq_items=global_of_code[items].astype(np.int32),
        seq_times=seq_times,
        meta=meta,
    )
    ds.validate()
    return ds


def prepare_tables(interactions: pd.DataFrame, items: pd.DataFrame, data_cfg: dict | None = None,
                   synthetic: bool = False) -> PreparedDataset:
    """Generic-table frames -> PreparedDataset, in memory (for tests and notebooks)."""
    cfg = default_data_config()
    cfg.update(data_cfg or {})
    frames = [df.astype(object).where(df.notna(), "").astype(str) for df in (interactions, items)]
    raw = from_tables(frames[0], frames[1], cfg["columns"], "interactions (frame)", "items (frame)", cfg["time_unit"])
    raw.source = {"format": "table", "files": [], "synthetic": synthetic}
    return build_dataset(raw, cfg)


def dataset_stats(ds: PreparedDataset) -> dict[str, Any]:
    """compute_stats plus what prepare reports beyond it (empty titles)."""
    stats = compute_stats(ds)
    stats["empty_titles"] = int((ds.items["title"].astype(str).str.strip() == "").sum())
    return stats


def format_stats(stats: dict[str, Any]) -> str:
    a, b = list(stats["items"])
    h = stats["history_length"]
    lines = [
        f"users          {stats['users']:,}",
        f"items          {a} {stats['items'][a]:,} + {b} {stats['items'][b]:,} = {stats['items'][a] + stats['items'][b]:,}",
        f"interactions   {a} {stats['interactions'][a]:,} + {b} {stats['interactions'][b]:,} = "
        f"{stats['interactions'][a] + stats['interactions'][b]:,}",
        f"overlap users  {stats['overlap_users']:,} ({stats['overlap_ratio']:.1%}); only {a} {stats['users_only'][a]:,}, only {b} {stats['users_only'][b]:,}",
        f"history length min {h['min']}, mean {h['mean']:.2f}, max {h['max']}",
        f"empty titles   {stats.get('empty_titles', 0):,}",
    ]
    if stats.get("synthetic"):
        lines.append("NOTE: this is SYNTHETIC data (llm4cdsr synth / built-in demo world), not a real benchmark")
    return "\n".join(lines)


# ----- inputs ---------------------------------------------------------------------------------
TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".tsv")


def _paths(value) -> list[Path]:
    if value is None or value == "" or value == []:
        return []
    return [Path(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def _find_in_folder(folder: Path, stem: str) -> Path | None:
    for suffix in TABLE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def resolve_inputs(data_cfg: dict) -> dict[str, Any]:
    """Which format and which files the `data` section names (format `auto` resolved)."""
    from llm4cdsr.data import douban

    fmt = str(data_cfg.get("format", "auto"))
    interactions, items = _paths(data_cfg.get("interactions")), _paths(data_cfg.get("items"))
    reviews, meta = _paths(data_cfg.get("reviews")), _paths(data_cfg.get("meta"))
    known = ("auto", "synthetic", "table", "amazon", "amazon2018", "amazon2023", "recbole", "douban")
    if fmt not in known:
        raise DataError(f"data.format must be one of {', '.join(known)}, got {fmt!r}")

    marker_dirs: list[Path] = []
    if len(interactions) == 1 and interactions[0].is_dir():
        folder = interactions[0]
        marker_dirs.append(folder)
        inter_files = sorted(folder.glob("*.inter"))
        if inter_files and fmt in ("auto", "recbole"):
            fmt, interactions = "recbole", inter_files
            items = items or sorted(folder.glob("*.item"))
        elif fmt == "douban" or (fmt == "auto" and douban.is_douban_folder(folder)):
            fmt = "douban"  # douban_inputs below finds the files
        else:
            found = _find_in_folder(folder, "interactions")
            if found is None:
                raise DataError(f"{folder}: no interactions.csv / interactions.parquet (or RecBole .inter files) in this folder")
            interactions = [found]
            if not items:
                found_items = _find_in_folder(folder, "items")
                if found_items is None:
                    raise DataError(f"{folder}: no items.csv / items.parquet in this folder")
                items = [found_items]
    marker_dirs += [p.parent for p in interactions]

    if items and not interactions:
        raise DataError("data.items is set but data.interactions is not: the table and RecBole formats need an interactions file (--interactions FILE)")
    if meta and not reviews:
        raise DataError("data.meta is set but data.reviews is not: the Amazon format needs two review dumps (--reviews A B)")
    if fmt == "synthetic" and (interactions or reviews):
        raise DataError("data.format is synthetic but input files are named (data.interactions / data.reviews); drop one or the other")
    if fmt == "auto":
        if reviews:
            fmt = "amazon"
        elif interactions:
            fmt = ("recbole" if all(p.suffix == ".inter" for p in interactions)
                   else "douban" if all(douban.is_douban_review(p) for p in interactions) else "table")
        else:
            fmt = "synthetic"
    if fmt == "douban":
        interactions, items = douban.douban_inputs(interactions, items)
    if fmt.startswith("amazon") and not reviews:
        raise DataError("data.reviews: the Amazon format needs two review dumps (--reviews A.json.gz B.json.gz)")
    if fmt in ("table", "recbole") and not interactions:
        raise DataError(f"data.interactions: format {fmt} needs an interactions file (--interactions FILE)")
    if fmt == "table":
        if len(interactions) != 1:
            raise DataError(f"data.interactions: the table format takes one file, got {len(interactions)}")
        if len(items) != 1:
            raise DataError("data.items: the table format needs one items file (--items FILE)")
    files = interactions + items if fmt in ("table", "recbole", "douban") else reviews + meta if fmt.startswith("amazon") else []
    for p in files:
        if not p.is_file():
            raise DataError(f"input file not found: {p}")
    synthetic = fmt == "synthetic" or any((d / SYNTH_MARKER).is_file() for d in marker_dirs)
    return {"format": fmt, "interactions": interactions, "items": items, "reviews": reviews, "meta": meta,
            "files": files, "synthetic": synthetic}


def load_raw(data_cfg: dict, inputs: dict | None = None, progress: bool = True) -> RawData:
    """Read the raw data the `data` section names, in any supported format."""
    inputs = inputs or resolve_inputs(data_cfg)
    fmt = inputs["format"]
    if fmt == "synthetic":
        from llm4cdsr.data.synth import generate_world, synth_params

        params = synth_params(data_cfg["synth"])
        interactions, items = generate_world(**params)
        raw = from_tables(interactions.astype(str), items, None, "synthetic interactions", "synthetic items", "s")
        raw.source = {"format": "synthetic", "files": [], "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}
    elif fmt == "table":
        raw = read_tables(inputs["interactions"][0], inputs["items"][0], data_cfg["columns"],
                          data_cfg["csv_sep"], data_cfg["time_unit"])
    elif fmt == "recbole":
        from llm4cdsr.data.recbole import read_recbole

        raw = read_recbole(inputs["interactions"], inputs["items"], data_cfg["columns"], data_cfg["time_unit"])
    elif fmt == "douban":
        from llm4cdsr.data.douban import read_douban

        raw = read_douban(inputs["interactions"], inputs["items"], data_cfg.get("douban_min_rating", 0),
                          bool(data_cfg.get("skip_bad_lines", False)), progress)
    else:
        from llm4cdsr.data.amazon import read_amazon

        version = fmt[len("amazon"):] or "auto"
        raw = read_amazon(inputs["reviews"], inputs["meta"], version, bool(data_cfg["skip_bad_lines"]), progress)
    raw.source["synthetic"] = bool(inputs["synthetic"])
    return raw


# ----- staleness --------------------------------------------------------------------------------
def _fingerprint(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def data_hash(cfg: dict, inputs: dict | None = None) -> str:
    """Hash of what decides the dataset: the `data` section, the input files (path, size,
    mtime) and the pipeline and format versions. Stored as meta.json's `config_hash`."""
    data_cfg = dict(cfg["data"])
    inputs = inputs or resolve_inputs(data_cfg)
    if inputs["format"] != "synthetic":
        data_cfg.pop("synth", None)  # the demo world's knobs do not touch real data
    return stable_hash({
        "data": data_cfg,
        "files": [_fingerprint(p) for p in inputs["files"]],
        "pipeline_version": PIPELINE_VERSION,
        "format_version": FORMAT_VERSION,
    })


def is_current(cfg: dict) -> bool:
    """True when `<workspace>/dataset/` was prepared from exactly these inputs and options."""
    meta = Workspace(cfg["workspace"]).meta(Workspace(cfg["workspace"]).dataset_dir)
    if meta is None or meta.get("format_version") != FORMAT_VERSION:
        return False
    try:
        return meta.get("config_hash") == data_hash(cfg)
    except (DataError, OSError):
        return False  # inputs gone or unreadable: nothing proves the dataset current


def run_prepare(cfg: dict, force: bool = False, progress: bool = True) -> PreparedDataset:
    """Prepare the dataset into `<workspace>/dataset/`, or load it when it is current."""
    ws = Workspace(cfg["workspace"])
    inputs = resolve_inputs(cfg["data"])
    config_hash = data_hash(cfg, inputs)

    def current() -> PreparedDataset | None:
        meta = ws.meta(ws.dataset_dir)
        if meta is not None and meta.get("config_hash") == config_hash and meta.get("format_version") == FORMAT_VERSION:
            try:
                return PreparedDataset.load(ws.dataset_dir)
            except DatasetError as e:
                log.warning("%s; preparing again", e)
        return None

    ds = None if force else current()
    if ds is not None:
        return ds
    with folder_lock(ws.dataset_dir):
        ds = None if force else current()  # another process may have just made it
        if ds is not None:
            return ds
        raw = load_raw(cfg["data"], inputs, progress)
        ds = build_dataset(raw, cfg["data"])
        del raw
        ds.meta["config_hash"] = config_hash
        ds.meta["data_config"] = cfg["data"]
        ds.save(ws.dataset_dir, dataset_stats(ds))
    return ds
