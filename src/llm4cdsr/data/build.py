"""Raw data (`RawData`, any importer) -> a PreparedDataset in memory: the filters of the `data`
section and the id assignment. Below both `prepare` (files, workspace, staleness) and `synth`
(the demo world), which both build datasets through it.

Order of operations (each on the merged two-domain data):
  1. domain mapping (data.domain_map) and domain order (data.domains, else sorted names)
  2. time window (data.time_min <= t < data.time_max)
  3. exact duplicate rows (same user, item and time or position) dropped (data.duplicates: drop);
     a doubled file otherwise puts every leave-one-out target into its own training history
  4. repeated (user, item) pairs (data.repeats)
  5. iterated k-core (data.min_user, data.min_item)
  6. most recent data.max_history interactions per user
  7. users with fewer than 3 interactions dropped (leave-one-out needs train, valid and test)
  8. items left without interactions dropped; ids assigned

Each history is ordered by time; equal times keep the input row order (a stable sort), so the
result never depends on the sort algorithm. Users are indexed by sorted raw id; each domain's
items get local ids 1..n_d by sorted raw id. Ids stay Python strings in object arrays throughout:
a fixed-width NumPy string array is as wide as the longest id for every row.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from llm4cdsr.config import load_config
from llm4cdsr.data import filters
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.raw import RawData, from_tables, listing

# Bump when the pipeline would turn the same inputs into a different dataset.
# 2: exact duplicate rows are dropped by default (data.duplicates).
PIPELINE_VERSION = 2
MIN_HISTORY = 3
DUPLICATE_POLICIES = ("drop", "keep")

log = logging.getLogger(__name__)


def default_data_config() -> dict[str, Any]:
    return load_config()["data"]


# ----- building -------------------------------------------------------------------------------
def _domain_codes(raw: RawData, domain_map: dict, order: list) -> tuple[tuple[str, str], np.ndarray]:
    """(domain names A, B) and, per item code, 0 / 1, or -1 for an item whose domain is dropped."""
    where = raw.source.get("files", ["input"])[0] if raw.source.get("files") else "input"
    return domain_codes(raw.items["domain"], np.unique(raw.item_codes), domain_map, order, where)


def domain_codes(item_domains: pd.Series, used_codes: np.ndarray, domain_map: dict, order: list,
                 where: str) -> tuple[tuple[str, str], np.ndarray]:
    """(domain names A, B) and, per entry of `item_domains`, 0 / 1, or -1 where the domain is
    dropped; only the entries at `used_codes` (items with interactions) decide the names."""
    item_domains = item_domains.astype(str)
    if domain_map:
        mapped = item_domains.map(lambda d: domain_map.get(d, d))
        item_domains = mapped.where(mapped.notna(), None)
    used = pd.Series(item_domains.to_numpy()[used_codes]).dropna()
    names = sorted(set(used.astype(str)))
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


def check_policies(cfg: dict) -> str:
    """Check data.repeats and data.duplicates; returns the duplicates policy."""
    if cfg["repeats"] not in filters.REPEAT_POLICIES:
        raise DataError(f"data.repeats must be one of {', '.join(filters.REPEAT_POLICIES)}, got {cfg['repeats']!r}")
    duplicates = cfg.get("duplicates", "drop")
    if duplicates not in DUPLICATE_POLICIES:
        raise DataError(f"data.duplicates must be one of {', '.join(DUPLICATE_POLICIES)}, got {duplicates!r}")
    return duplicates


def warn_duplicates(where: str, count: int, time_kind: str) -> None:
    log.warning("%s: %d exact duplicate row(s) (same user, item and %s) dropped; data.duplicates=keep keeps them",
                where, count, "time" if time_kind == "timestamp" else "position")


def build_dataset(raw: RawData, data_cfg: dict | None = None) -> PreparedDataset:
    """Apply the filters of the `data` config section to raw data and assign ids (in memory)."""
    cfg = default_data_config()
    cfg.update(data_cfg or {})
    duplicates = check_policies(cfg)
    domains, item_domain = _domain_codes(raw, cfg.get("domain_map") or {}, list(cfg.get("domains") or []))

    # One stable sort up front (user by raw id, then time, ties by input row order); every
    # later step only masks, so that order carries through to the saved histories.
    user_text = np.asarray([str(u) for u in raw.user_ids], dtype=object)  # never `.astype(str)`: fixed width
    by_user_id = np.argsort(user_text, kind="stable")
    user_rank = np.empty(len(raw.user_ids), dtype=np.int64)
    user_rank[by_user_id] = np.arange(len(raw.user_ids))
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

    duplicate_rows = 0
    if duplicates == "drop":
        unique = filters.exact_duplicates(users[keep], items[keep], times[keep])
        duplicate_rows = int((~unique).sum())
        if duplicate_rows:
            warn_duplicates((raw.source.get("files") or ["the input"])[0], duplicate_rows, raw.time_kind)
            apply(unique, "exact duplicate rows")
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
    user_ids = user_text[by_user_id][kept_users]
    kept_items = np.unique(items)
    dom = item_domain[kept_items]
    raw_item_ids = np.asarray([str(i) for i in raw.items["item_id"].to_numpy(dtype=object)[kept_items]], dtype=object)
    # Domain A first, then raw id: the row order is the global id order.
    item_order = np.lexsort((raw_item_ids, dom))
    ordered = kept_items[item_order]
    global_of_code = np.zeros(len(raw.items), dtype=np.int64)
    global_of_code[ordered] = np.arange(1, len(ordered) + 1)

    counts = np.bincount(user_new, minlength=len(kept_users))
    return assemble(raw.items.iloc[ordered].reset_index(drop=True), item_domain[ordered], domains, user_ids, counts,
                    global_of_code[items], times, raw.source, raw.time_kind, raw.time_unit,
                    {"steps": steps, "duplicate_rows_dropped": duplicate_rows,
                     "items_dropped": int(len(raw.items) - len(ordered)), **raw.notes})


def assemble(table: pd.DataFrame, dom_sorted: np.ndarray, domains: tuple[str, str], user_ids: np.ndarray,
             counts: np.ndarray, seq_items: np.ndarray, times: np.ndarray, source: dict[str, Any], time_kind: str,
             time_unit: str, report: dict[str, Any]) -> PreparedDataset:
    """The PreparedDataset of filtered interactions, whichever reader and engine filtered them.

    `table`: the kept items in global id order (item_id, title, extra text columns), `dom_sorted`
    their domain codes; `counts` interactions per kept user, `seq_items` (global ids) and `times`
    in history order; `report`: steps, duplicate_rows_dropped, items_dropped and the importer's notes."""
    n = len(table)
    n_a = int((dom_sorted == 0).sum())
    extra = [c for c in table.columns if c not in ("item_id", "domain", "title")]
    items_df = pd.DataFrame({
        "global_id": np.arange(1, n + 1, dtype=np.int64),
        "domain": np.where(dom_sorted == 0, domains[0], domains[1]).astype(object),
        "local_id": np.where(dom_sorted == 0, np.arange(1, n + 1), np.arange(1, n + 1) - n_a).astype(np.int64),
        "raw_id": table["item_id"].astype(str).to_numpy(dtype=object),
        "title": table["title"].fillna("").astype(str).to_numpy(dtype=object),
    })
    for c in extra:
        items_df[c] = table[c].fillna("").astype(str).to_numpy(dtype=object)

    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    seq_times = np.rint(times).astype(np.int64) if times.dtype.kind == "f" else times.astype(np.int64)

    report = dict(report)
    empty_titles = int((items_df["title"].str.strip() == "").sum())
    meta = {
        "source": source,
        "time_kind": time_kind,
        "time_unit": time_unit if time_kind == "timestamp" else None,
        "synthetic": bool(source.get("synthetic", False)),
        "pipeline_version": PIPELINE_VERSION,
        "prepare_report": {"steps": report.pop("steps"), "empty_titles": empty_titles, **report},
    }
    ds = PreparedDataset(
        domains=domains,
        n_items=(n_a, n - n_a),
        items=items_df,
        user_ids=np.asarray(user_ids, dtype=object),
        seq_offsets=offsets,
        seq_items=np.asarray(seq_items).astype(np.int32),
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
