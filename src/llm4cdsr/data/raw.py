"""The common in-memory form every importer produces, and the generic table importer.

Importers differ in how they read files; all of them hand `prepare` one `RawData`: interactions
as integer codes in input row order (that order breaks ties between equal timestamps), plus an
items table whose row number is the item code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from llm4cdsr.data.errors import DataError

# How many offending lines or ids an error message lists before it says "and N more".
SHOW = 5
# The longest user or item id accepted: ids are keys, not text (one 10 MB id once made `prepare`
# ask for 58.6 GiB).
MAX_ID_CHARS = 256
# Id values that a spreadsheet or pandas wrote for a missing value: never a real user or item.
MISSING_MARKERS = frozenset({"nan", "NaN", "-nan", "-NaN", "NA", "N/A", "n/a", "#N/A", "#NA", "<NA>", "NULL", "null",
                             "None", "NaT"})


@dataclass
class RawData:
    user_codes: np.ndarray  # int64 (n,): index into user_ids, in input row order
    user_ids: np.ndarray  # str (U,): raw user ids
    item_codes: np.ndarray  # int64 (n,): row of `items`
    times: np.ndarray  # int64 or float64 (n,): timestamp or position of each interaction
    items: pd.DataFrame  # item_id, domain, title, extra text columns (all str); row = item code
    time_kind: str = "timestamp"  # "timestamp" | "position"
    time_unit: str = "s"  # "s" | "ms": unit of timestamps
    source: dict[str, Any] = field(default_factory=dict)  # format and files, recorded in meta.json
    notes: dict[str, Any] = field(default_factory=dict)  # importer counts (bad lines, items without metadata)

    @property
    def n_interactions(self) -> int:
        return len(self.item_codes)

    @classmethod
    def from_streamed(cls, user_code: dict[str, int], users, items, times, table: pd.DataFrame, time_unit: str,
                      source: dict[str, Any], notes: dict[str, Any]) -> RawData:
        """From what a streaming importer grows: raw user id -> code, and `array` columns of user
        codes ("i"), item codes ("i") and timestamps ("q") in input order."""
        return cls(
            user_codes=np.frombuffer(users, dtype=np.int32).astype(np.int64),
            user_ids=np.asarray(list(user_code), dtype=object),
            item_codes=np.frombuffer(items, dtype=np.int32).astype(np.int64),
            times=np.frombuffer(times, dtype=np.int64).copy(),
            items=table,
            time_kind="timestamp",
            time_unit=time_unit,
            source=source,
            notes=notes,
        )


def listing(values, total: int | None = None) -> str:
    """'a, b, c and 7 more': a few offending values for an error message."""
    values = list(values)
    total = len(values) if total is None else total
    shown = ", ".join(str(v) for v in values[:SHOW])
    return shown + (f" and {total - SHOW} more" if total > SHOW else "")


def _rows(is_csv: bool, rows: np.ndarray) -> str:
    """'line 3, 7' for CSV (line 1 is the header; quoted newlines aside), 'row 1, 5' for Parquet."""
    if is_csv:
        return "line " + listing((int(r) + 2 for r in rows), len(rows))
    return "row " + listing((int(r) for r in rows), len(rows))


def _row_name(path: str, is_csv: bool, rows: np.ndarray) -> str:
    return f"{path}: {_rows(is_csv, rows)}"


# Field separators a CSV written elsewhere often has: a header read as one column that holds one
# of them is a separator mismatch, not a missing column.
OTHER_SEPARATORS = {"\t": "a tab (data.csv_sep: \"\\t\")", ";": "';' (data.csv_sep: \";\")", "|": "'|' (data.csv_sep: \"|\")"}


def _undecodable_line(path: Path, encoding: str) -> tuple[int, int] | None:
    """(line number, offending byte) of the first line that is not text in `encoding`."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as e:
                return number, line[e.start]
    return None


def read_table(path: str | Path, sep: str = ",", what: str = "table", encoding: str = "utf-8") -> pd.DataFrame:
    """A CSV or Parquet file with every column as text (ids such as '007' stay as written)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    suffixes = "".join(path.suffixes).lower()
    if ".parquet" in suffixes or suffixes.endswith(".pq"):
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: cannot read as Parquet: {e}") from e
        _unique_columns(names, path)
        df = pd.read_parquet(path)
        # Parquet carries types; text is what the pipeline needs, nulls become empty strings.
        return df.astype(object).where(df.notna(), "").astype(str)
    try:
        # The header as written: read_csv renames a repeated name (`timestamp.1`) without a word.
        header = pd.read_csv(path, sep=sep, dtype=str, header=None, nrows=1, keep_default_na=False, na_filter=False,
                             encoding=encoding)
        names = [str(c) for c in header.iloc[0]]
        _unique_columns(names, path)
        if len(names) == 1:
            for other, hint in OTHER_SEPARATORS.items():
                if other != sep and other in names[0]:
                    raise DataError(f"{path}: line 1 is one column {names[0][:60]!r}: the file looks separated by {hint}, "
                                    f"not {sep!r}; set data.csv_sep")
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False, encoding=encoding)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (no header line); a {what} table needs a header and rows") from None
    except UnicodeDecodeError:
        where = _undecodable_line(path, encoding)
        at = f"line {where[0]} holds byte 0x{where[1]:02x}, which" if where else "it"
        raise DataError(f"{path}: {at} is not {encoding} text; save the file as UTF-8, or set data.encoding "
                        "(e.g. data.encoding=latin-1)") from None
    except LookupError:
        raise DataError(f"data.encoding {encoding!r} is not an encoding Python knows (e.g. utf-8, latin-1, cp1252)") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: cannot read as CSV: {e}") from e


def _unique_columns(names: list[str], path: Path) -> None:
    seen: set[str] = set()
    repeated = [n for n in names if n in seen or seen.add(n)]
    if repeated:
        raise DataError(f"{path}: column name(s) {listing(repr(n) for n in dict.fromkeys(repeated))} appear more than "
                        "once in the header; rename or drop the copies")


def _require(df: pd.DataFrame, cols: list[str], path: str, hint: str = "") -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(it has {', '.join(repr(c) for c in df.columns)}){hint}"
        )


def _no_empty(df: pd.DataFrame, col: str, path: str, is_csv: bool) -> None:
    empty = np.flatnonzero((df[col].str.strip() == "").to_numpy())
    if empty.size:
        raise DataError(f"{_row_name(path, is_csv, empty)}: empty '{col}'")


def check_ids(values: pd.Series, col: str, path: str, is_csv: bool) -> None:
    """Ids are bounded keys: none longer than MAX_ID_CHARS, none a missing-value marker ("NaN")."""
    long = np.flatnonzero((values.str.len() > MAX_ID_CHARS).to_numpy())
    if long.size:
        raise DataError(f"{_row_name(path, is_csv, long)}: '{col}' is longer than {MAX_ID_CHARS} characters "
                        f"({values.iloc[int(long[0])][:40]!r}...); ids are keys, not text")
    missing = np.flatnonzero(values.str.strip().isin(MISSING_MARKERS).to_numpy())
    if missing.size:
        raise DataError(f"{_row_name(path, is_csv, missing)}: '{col}' is {values.iloc[int(missing[0])].strip()!r}, "
                        "which is how a missing value is written, not an id; drop or fill these rows")


def parse_times(values: pd.Series, path: str, col: str, is_csv: bool) -> np.ndarray:
    """Numbers only; int64 when every value is whole, else float64. Names the bad lines."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(numbers.isna().to_numpy())
    if bad.size:
        examples = listing((repr(values.iloc[r]) for r in bad), bad.size)
        raise DataError(f"{_row_name(path, is_csv, bad)}: '{col}' is not a number ({examples})")
    arr = numbers.to_numpy(dtype=np.float64)
    if np.all(np.mod(arr, 1) == 0) and np.abs(arr).max(initial=0) < 2**62:
        return arr.astype(np.int64)
    return arr


def check_items(items: pd.DataFrame, path: str, is_csv: bool = True) -> None:
    """Item ids must be unique; one id in two domains is ambiguous, so it is an error."""
    dup = items["item_id"].duplicated(keep=False).to_numpy()
    if not dup.any():
        return
    groups = items[dup].groupby("item_id", sort=False)["domain"].nunique()
    cross = groups[groups > 1].index.tolist()
    if cross:
        raise DataError(f"{path}: item id(s) duplicated across domains: {listing(cross)}; item ids must be unique over both domains")
    same = groups.index.tolist()
    raise DataError(f"{path}: item id(s) listed more than once: {listing(same)}")


def from_tables(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    columns: dict[str, str] | None = None,
    interactions_path: str = "interactions",
    items_path: str = "items",
    time_unit: str = "s",
) -> RawData:
    """Generic table form -> RawData. Both frames hold text columns (see `read_table`)."""
    c = {"user": "user_id", "item": "item_id", "domain": "domain", "time": "timestamp",
         "position": "position", "title": "title"}
    c.update(columns or {})
    i_csv = not str(interactions_path).lower().endswith((".parquet", ".pq"))
    t_csv = not str(items_path).lower().endswith((".parquet", ".pq"))

    if c["time"] in interactions.columns:
        time_col, time_kind = c["time"], "timestamp"
    elif c["position"] in interactions.columns:
        time_col, time_kind = c["position"], "position"
    else:
        raise DataError(
            f"{interactions_path}: needs a '{c['time']}' or a '{c['position']}' column to order each history "
            f"(it has {', '.join(repr(x) for x in interactions.columns)}; rename with data.columns.time / data.columns.position)"
        )
    hint = " (set data.columns.<name> if your file names it differently)"
    _require(interactions, [c["user"], c["item"], c["domain"]], interactions_path, hint)
    _require(items, [c["item"], c["domain"], c["title"]], items_path, hint)
    for col in (c["user"], c["item"], c["domain"]):
        _no_empty(interactions, col, interactions_path, i_csv)
        check_ids(interactions[col], col, interactions_path, i_csv)
    for col in (c["item"], c["domain"]):
        _no_empty(items, col, items_path, t_csv)
        check_ids(items[col], col, items_path, t_csv)
    times = parse_times(interactions[time_col], interactions_path, time_col, i_csv)

    extra = [col for col in items.columns if col not in (c["item"], c["domain"], c["title"])]
    table = pd.DataFrame({
        "item_id": items[c["item"]].str.strip().to_numpy(dtype=object),
        "domain": items[c["domain"]].str.strip().to_numpy(dtype=object),
        "title": items[c["title"]].to_numpy(dtype=object),
    })
    for col in extra:
        table[col] = items[col].to_numpy(dtype=object)
    check_items(table, items_path, t_csv)

    item_index = pd.Index(table["item_id"])
    inter_items = interactions[c["item"]].str.strip()
    item_codes = item_index.get_indexer(inter_items)
    unknown = np.flatnonzero(item_codes < 0)
    if unknown.size:
        ids = pd.unique(inter_items.iloc[unknown])
        raise DataError(
            f"{interactions_path}: {unknown.size} interaction(s) name an item with no row in {items_path}: "
            f"{listing(ids)} (first at {_rows(i_csv, unknown[:1])})"
        )
    inter_domains = interactions[c["domain"]].str.strip().to_numpy(dtype=object)
    mismatch = np.flatnonzero(inter_domains != table["domain"].to_numpy()[item_codes])
    if mismatch.size:
        r = int(mismatch[0])
        raise DataError(
            f"{_row_name(interactions_path, i_csv, mismatch)}: domain differs from the item's domain in {items_path} "
            f"(e.g. item {inter_items.iloc[r]!r}: {inter_domains[r]!r} here, {table['domain'].iloc[item_codes[r]]!r} there)"
        )

    user_codes, user_ids = pd.factorize(interactions[c["user"]].str.strip())
    return RawData(
        user_codes=user_codes.astype(np.int64),
        user_ids=np.asarray(user_ids, dtype=object),
        item_codes=item_codes.astype(np.int64),
        times=times,
        items=table,
        time_kind=time_kind,
        time_unit=time_unit,
        source={"format": "table", "files": [str(interactions_path), str(items_path)]},
    )


def read_tables(interactions_path: str | Path, items_path: str | Path, columns: dict | None = None,
                sep: str = ",", time_unit: str = "s", encoding: str = "utf-8") -> RawData:
    inter = read_table(interactions_path, sep, "interactions", encoding)
    items = read_table(items_path, sep, "items", encoding)
    return from_tables(inter, items, columns, str(interactions_path), str(items_path), time_unit)
