"""Vectorised interaction filters. Each returns a boolean keep-mask over the interactions given.

Every function here expects interactions already sorted by user, then chronologically (ties in
input row order), which is how `prepare` hands them over.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llm4cdsr.data.errors import DataError

REPEAT_POLICIES = ("keep_all", "keep_first", "keep_last")


def time_bound(value, time_unit: str, time_kind: str, key: str) -> float | None:
    """A time_min/time_max value as a number in the data's unit (dates become unix time)."""
    if value is None or value == "":
        return None
    if time_kind == "position":
        raise DataError(f"data.{key}: this data has positions, not timestamps, so a time window cannot apply")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        stamp = pd.Timestamp(str(value))
    except ValueError as e:
        raise DataError(f"data.{key}: {value!r} is neither a number nor a date like 2015-01-01") from e
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    seconds = stamp.timestamp()
    return seconds * 1000.0 if time_unit == "ms" else seconds


def time_window(times: np.ndarray, start: float | None, end: float | None) -> np.ndarray:
    """Keep start <= t < end (either bound may be None)."""
    keep = np.ones(len(times), dtype=bool)
    if start is not None:
        keep &= times >= start
    if end is not None:
        keep &= times < end
    return keep


def repeats(users: np.ndarray, items: np.ndarray, policy: str) -> np.ndarray:
    """keep_all, or keep only the first / last occurrence of each (user, item) pair."""
    if policy not in REPEAT_POLICIES:
        raise DataError(f"data.repeats must be one of {', '.join(REPEAT_POLICIES)}, got {policy!r}")
    if policy == "keep_all":
        return np.ones(len(users), dtype=bool)
    pairs = pd.DataFrame({"u": users, "i": items})
    return ~pairs.duplicated(keep="first" if policy == "keep_first" else "last").to_numpy()


def exact_duplicates(users: np.ndarray, items: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Keep the first of rows that repeat the same (user, item, time): one event written twice."""
    rows = pd.DataFrame({"u": users, "i": items, "t": times})
    return ~rows.duplicated(keep="first").to_numpy()


def kcore(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Iterated k-core: repeat dropping users with < min_user and items with < min_item
    interactions until both hold for everything left (removing one side can break the other)."""
    keep = np.ones(len(users), dtype=bool)
    if min_user <= 0 and min_item <= 0:
        return keep
    n_users = int(users.max(initial=-1)) + 1
    n_items = int(items.max(initial=-1)) + 1
    while True:
        u, i = users[keep], items[keep]
        user_ok = np.bincount(u, minlength=n_users) >= min_user
        item_ok = np.bincount(i, minlength=n_items) >= min_item
        drop = ~(user_ok[u] & item_ok[i])
        if not drop.any():
            return keep
        keep[np.flatnonzero(keep)[drop]] = False


def most_recent(users: np.ndarray, max_len: int) -> np.ndarray:
    """Keep each user's last `max_len` interactions (users must be grouped, in time order)."""
    if max_len <= 0 or len(users) == 0:
        return np.ones(len(users), dtype=bool)
    # Within a run of equal user codes, count how many interactions follow this one.
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    run_len = np.diff(np.r_[starts, len(users)])
    run_end = np.repeat(starts + run_len, run_len)
    return (run_end - np.arange(len(users))) <= max_len


def min_length(users: np.ndarray, min_len: int) -> np.ndarray:
    """Drop users with fewer than `min_len` interactions."""
    if len(users) == 0:
        return np.ones(0, dtype=bool)
    counts = np.bincount(users)
    return counts[users] >= min_len
