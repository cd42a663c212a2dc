"""Raw review dumps (Amazon 2018/2023, Douban) read and filtered by DuckDB (`data.engine`).

Why: the Python readers handle one line at a time (`json.loads` per line was 81% of `prepare` on a
5M-line dump). DuckDB parses the files in C++ on every core, keeps only the columns used, and runs
the filters (time window, duplicates, repeats, iterated k-core, history cap) as SQL over integer
codes; only the filtered histories come back to NumPy. Figures, and why DuckDB over Polars:
docs/input-formats.md ("Reading engine").

The contract is the Python path's dataset, array for array (tests/test_data_columnar.py compares
them on every fixture): the same reading rules (first metadata row wins, the same text clean-up:
`amazon.meta_row` and `douban._text` run on the few rows kept), the same filters in the same order
(build.py's docstring), ties broken by input order (the `row` column: file order, then line), and
ids ordered by raw id in code point order (DuckDB's binary string order, as Python's `<`).
Wherever the input holds something the engine could read differently from the Python rules (a
malformed line, a missing field, an id that is not a JSON string, a float or text time, a date or
rating the Python parser must judge), it hands over to the Python path (`Fallback`), which reads
the files again and stops at that line with `file:line`, or skips it under data.skip_bad_lines
with the same counts. So the engine only ever answers where it agrees with the reference.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llm4cdsr.data import amazon, douban
from llm4cdsr.data.build import MIN_HISTORY, assemble, check_policies, default_data_config, domain_codes, warn_duplicates
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.filters import time_bound
from llm4cdsr.data.raw import MAX_ID_CHARS

try:
    import duckdb
except ImportError:  # a dependency, but the Python path reads every format without it
    duckdb = None

log = logging.getLogger(__name__)

ENGINES = ("auto", "python", "duckdb")
FORMATS = ("amazon", "amazon2018", "amazon2023", "douban")  # the raw dumps the engine reads
# DuckDB spills to a temporary folder past this, so a dump larger than memory still prepares; on
# the 5M-line benchmark dump it stays below (see docs/input-formats.md for the peak).
MEMORY_LIMIT = "1GB"
# Python's whitespace (str.isspace: what str.strip() and str.split() remove) as an RE2 class;
# DuckDB's trim() removes spaces only, and Douban's tags hold ideographic spaces.
_WS = r"[\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"


# Texts DuckDB gives for JSON values that are not strings, where Python's str() would differ
# (True, 100000.0, 0, a dict's repr); a string id of this shape hands over too, harmlessly.
_NOT_AN_ID = r"true|false|-0|-?[0-9]+[.eE].*|[\[{].*"


class Fallback(Exception):
    """The input holds something only the Python path reads exactly; the message says what."""


def engine_for(data_cfg: dict, fmt: str) -> str:
    """'duckdb' or 'python': data.engine resolved for this input format."""
    engine = str(data_cfg.get("engine", "auto"))
    if engine not in ENGINES:
        raise DataError(f"data.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "duckdb" and duckdb is None:
        raise DataError("data.engine=duckdb, but DuckDB is not installed (pip install duckdb); or set data.engine=python")
    if engine == "python" or duckdb is None or fmt not in FORMATS:
        return "python"  # tables are read column-wise by pandas/pyarrow already
    return "duckdb"


def engine_version() -> str:
    return f"duckdb {duckdb.__version__}"


def prepare_dump(data_cfg: dict, inputs: dict, progress: bool = True) -> PreparedDataset | None:
    """The prepared dataset of a raw dump, read and filtered by DuckDB; None where the Python
    path must read it instead (the reason is logged)."""
    cfg = default_data_config()
    cfg.update(data_cfg)
    with tempfile.TemporaryDirectory(prefix="llm4cdsr-duckdb-") as spill:
        con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "temp_directory": spill})
        con.execute(f"SET enable_progress_bar = {str(bool(progress)).lower()}")
        try:
            read = _read_douban(con, inputs, cfg) if inputs["format"] == "douban" else _read_amazon(con, inputs)
            read["source"]["synthetic"] = bool(inputs["synthetic"])
            return _build(con, read, cfg)
        except Fallback as e:
            log.info("%s: reading with the Python path instead of DuckDB", e)
        except duckdb.Error as e:  # a malformed line, a wrong field count: the Python path names the line
            log.info("DuckDB could not read the input (%s); reading with the Python path, which names the line",
                     str(e).splitlines()[0])
        finally:
            con.close()
    return None


# ----- Amazon ----------------------------------------------------------------------------------
def _read_amazon(con, inputs: dict) -> dict[str, Any]:
    reviews, meta = inputs["reviews"], inputs["meta"]
    version, domains = amazon.review_setup(reviews, inputs["format"][len("amazon"):] or "auto")
    f = amazon.FIELDS[version]
    # Read as text, the ids are what Python's str() makes of them, except for a few JSON values
    # (true, 1.5, -0, objects) that such ids might have been: those hand over, as do times that are
    # not plain whole numbers (Python's int() truncates a float; DuckDB's cast rounds it).
    # Both files go through one scan (DuckDB decompresses them side by side where a core is free);
    # the scan keeps file order, then line order, which `rowid` records.
    columns = _struct({f["user"]: "VARCHAR", f["item"]: "VARCHAR", f["time"]: "VARCHAR"})
    con.execute(f"""
        CREATE TABLE inter AS
        SELECT u AS u_id, i AS i_id, (filename <> ?)::TINYINT AS d, TRY_CAST(t AS BIGINT) AS t,
               coalesce(NOT regexp_full_match(t, '-?[0-9]+') OR regexp_full_match(u, '{_NOT_AN_ID}')
                        OR regexp_full_match(i, '{_NOT_AN_ID}'), true) AS odd
        FROM read_json(?, columns = {columns}, format = 'newline_delimited', filename = true) AS j(u, i, t)""",
                [str(reviews[0]), [str(p) for p in reviews]])
    n, odd, long_ids = con.execute(
        f"SELECT count(*), count(*) FILTER (odd OR t IS NULL), "
        f"count(*) FILTER (length(u_id) > {MAX_ID_CHARS} OR length(i_id) > {MAX_ID_CHARS}) FROM inter").fetchall()[0]
    if odd:
        raise Fallback(f"{odd} review line(s) with a missing field, an id that may not be a JSON string, or a time that "
                       "is not a whole number")
    if long_ids:
        raise Fallback(f"{long_ids} review line(s) with an id longer than {MAX_ID_CHARS} characters")
    if n == 0:
        raise Fallback("no reviews")
    _reviewed_items(con)

    # Metadata: rows of reviewed items (and rows the Python path would call bad, to hand over);
    # the first row of an item wins, in file order. Its texts are made later, in Python as the
    # Python path makes them, and only for the items the filters keep.
    fields = [field for field, _ in amazon.META_FIELDS[version].values()]
    names = ", ".join(_q(x) for x in fields)
    odd = "coalesce(json_type(k) <> 'VARCHAR', true)"  # no item id, or not a string: the Python path judges
    columns = _struct({f["meta_item"]: "JSON", **dict.fromkeys(fields, "JSON")})
    con.execute("CREATE TABLE meta (k VARCHAR, odd BOOLEAN, fields JSON)")
    for path in meta:
        con.execute(f"""
            INSERT INTO meta
            SELECT k ->> '$', {odd}, json_array({names})
            FROM read_json(?, columns = {columns}, format = 'newline_delimited') AS j(k, {names})
            WHERE {odd} OR k ->> '$' IN (SELECT i_id FROM items)""", [str(path)])
    if con.execute("SELECT count(*) FROM meta WHERE odd").fetchall()[0][0]:
        raise Fallback("a metadata line without a string item id")
    con.execute("CREATE TABLE texts AS SELECT k, fields FROM meta QUALIFY row_number() OVER (PARTITION BY k ORDER BY rowid) = 1")
    con.execute("DROP TABLE meta")
    n_items, n_meta = con.execute("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM texts)").fetchall()[0]
    return {"domains": domains, "columns": list(amazon.META_FIELDS[version]), "time_unit": f["unit"],
            "texts": lambda values: amazon.meta_row(dict(zip(fields, values)), version),
            "notes": {"items_without_metadata": int(n_items - n_meta)},
            "source": {"format": f"amazon{version}", "files": [str(p) for p in [*reviews, *meta]]}}


def _reviewed_items(con) -> None:
    """The items table (one row per reviewed item, its domain and code); an item reviewed in
    both domains is an error the Python path words (listing the ids as it does)."""
    con.execute("CREATE TABLE items AS SELECT i_id, min(d) AS d, count(DISTINCT d) AS nd, "
                "(row_number() OVER () - 1)::INTEGER AS i FROM inter GROUP BY i_id")
    if con.execute("SELECT count(*) FROM items WHERE nd > 1").fetchall()[0][0]:
        raise Fallback("an item id in both domains")


# ----- Douban ----------------------------------------------------------------------------------
def _read_douban(con, inputs: dict, cfg: dict) -> dict[str, Any]:
    """douban.read_douban's rules in SQL. Headers come from the Python reader (its column errors);
    dates and ratings, a few thousand distinct values, go through its parsers (douban.parse_date,
    float()); ids and tags are stripped of Python's whitespace (`_WS`)."""
    reviews, meta = [Path(p) for p in inputs["interactions"]], [Path(p) for p in inputs["items"]]
    min_rating = cfg.get("douban_min_rating", 0)
    if len(reviews) != 2:
        raise Fallback("not two review files")
    con.execute(f"CREATE MACRO py_strip(s) AS regexp_replace(s, '^{_WS}+|{_WS}+$', '', 'g')")
    domains: list[str] = []
    con.execute("CREATE TABLE rev (u VARCHAR, item VARCHAR, t VARCHAR, rating VARCHAR, labels VARCHAR, d TINYINT)")
    for d, path in enumerate(reviews):
        header = _douban_header(path, "reviews")
        try:  # a missing column: the Python path says which, after any bad row of an earlier file
            domain = douban._review_domain(path, header)
            iu, ii, it = douban._columns(path, header, ["user_id", f"{domain}_id", "time"])
            ir = douban._columns(path, header, ["rating"])[0] if min_rating > 0 else -1
        except DataError as e:
            raise Fallback(str(e)) from e
        if domain in domains:
            raise Fallback("two review files of one domain")
        domains.append(domain)
        il = header.index("labels") if "labels" in header else -1
        column = (lambda k: f"c{k}" if k >= 0 else "NULL")
        con.execute(f"INSERT INTO rev SELECT py_strip(c{iu}), py_strip(c{ii}), c{it}, {column(ir)}, {column(il)}, {d} "
                    f"FROM {_read_tsv(path, len(header))}")
    bad = con.execute(f"SELECT count(*) FILTER (coalesce(u, '') = '' OR coalesce(item, '') = '' "
                      f"OR length(u) > {MAX_ID_CHARS} OR length(item) > {MAX_ID_CHARS}) FROM rev").fetchall()[0][0]
    if bad:
        raise Fallback(f"{bad} review row(s) with an empty or overlong id")
    # Dates and ratings: Python's parsers on the distinct values, joined back.
    days = [t for (t,) in con.execute("SELECT DISTINCT t FROM rev").fetchall()]
    stamps = {t: douban.parse_date(t) for t in days if t is not None}
    if None in days or None in stamps.values():
        raise Fallback("a review whose 'time' is not a date")
    con.register("days", pd.DataFrame({"t": list(stamps), "ts": np.array(list(stamps.values()), dtype=np.int64)}))
    dropped = {"ratings_below_min": 0, "ratings_missing": 0}
    keep = "true"
    if min_rating > 0:
        status = {r: _rating_status(r, min_rating) for (r,) in con.execute("SELECT DISTINCT rating FROM rev").fetchall()}
        if "bad" in status.values():
            raise Fallback("a review whose 'rating' is not a number")
        con.register("ratings", pd.DataFrame({"rating": list(status), "status": list(status.values())}))
        for key, name in (("ratings_below_min", "below"), ("ratings_missing", "missing")):
            dropped[key] = con.execute("SELECT count(*) FROM rev JOIN ratings ON rev.rating IS NOT DISTINCT FROM ratings.rating "
                                       "WHERE status = ?", [name]).fetchall()[0][0]
        keep = "rev.rating IN (SELECT rating FROM ratings WHERE status = 'keep')"
    names = ", ".join(f"'{x}'" for x in domains)
    con.execute(f"""CREATE TABLE inter AS
        SELECT u AS u_id, list_extract([{names}], d + 1) || ':' || item AS i_id, d, days.ts AS t, labels
        FROM rev JOIN days USING (t) WHERE {keep} ORDER BY rev.rowid""")
    con.execute("DROP TABLE rev")
    if con.execute("SELECT count(*) FROM inter").fetchall()[0][0] == 0:
        raise Fallback("no reviews")
    _reviewed_items(con)

    # Tags: an item's most frequent user tags, ties in order of first use (Counter.most_common).
    missing = ", ".join("'" + m.replace("'", "''") + "'" for m in sorted(douban.MISSING))
    con.execute(f"""CREATE TABLE tags AS
        WITH pieces AS (
            SELECT i_id, rowid AS row, unnest(string_split(labels, '|')) AS piece,
                   generate_subscripts(string_split(labels, '|'), 1) AS pos
            FROM inter WHERE labels IS NOT NULL),
        counted AS (
            SELECT i_id, py_strip(piece) AS tag, count(*) AS n, min(row * 1000000 + pos) AS first
            FROM pieces WHERE py_strip(piece) NOT IN ({missing}) GROUP BY i_id, py_strip(piece)
            QUALIFY row_number() OVER (PARTITION BY i_id ORDER BY n DESC, first) <= {douban.TOP_TAGS})
        SELECT i_id AS k, string_agg(tag, ', ' ORDER BY n DESC, first) AS tags FROM counted GROUP BY i_id""")

    # Metadata: per file, each candidate key column's first row per reviewed item; the column
    # matching more items is the key (ties: UID, listed first).
    headers = []
    for path in meta:
        header = _douban_header(path, "metadata")
        try:
            headers.append((path, header, douban._meta_domain(path, header, domains)))
        except DataError as e:
            raise Fallback(str(e)) from e
    text_columns: list[str] = []
    for _, header, _ in headers:
        text_columns += [name for c, name in douban.TEXT_COLUMNS.items() if c in header and name not in text_columns]
    values = ", ".join(f"{_q(x)} VARCHAR" for x in text_columns)
    con.execute(f"CREATE TABLE mtext (k VARCHAR, title VARCHAR{', ' + values if values else ''})")
    keys: dict[str, str] = {}
    for path, header, domain in headers:
        if domain in keys:
            raise Fallback("a second metadata file of one domain")
        candidates = [c for c in ("UID", f"{domain}_id") if c in header]
        if not candidates:
            raise Fallback("a metadata file without its key column")
        title = next((header.index(c) for c in douban.TITLE_COLUMNS if c in header), -1)
        if title < 0:
            log.warning("%s: no %s column; its items get empty titles", path, " or ".join(douban.TITLE_COLUMNS))
        kept = [(header.index(c), name) for c, name in douban.TEXT_COLUMNS.items() if c in header]
        con.execute(f"CREATE OR REPLACE TABLE mfile AS SELECT * FROM {_read_tsv(path, len(header))}")
        found = {}
        for c in candidates:
            con.execute(f"""CREATE OR REPLACE TABLE found_{len(found)} AS
                SELECT items.i_id AS k, {f"coalesce(c{title}, '')" if title >= 0 else "''"} AS title
                       {''.join(f", coalesce(c{i}, '') AS {_q(name)}" for i, name in kept)}
                FROM mfile JOIN items ON items.i_id = '{domain}:' || py_strip(mfile.c{header.index(c)})
                QUALIFY row_number() OVER (PARTITION BY items.i_id ORDER BY mfile.rowid) = 1""")
            found[c] = f"found_{len(found)}"
        counts = {c: con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] for c, table in found.items()}
        keys[domain] = max(candidates, key=lambda c: counts[c])
        columns = ", ".join(["k", "title", *(_q(name) for _, name in kept)])
        con.execute(f"INSERT INTO mtext ({columns}) SELECT {columns} FROM {found[keys[domain]]}")
    missing_meta = [d for d in domains if d not in keys]
    for d in missing_meta:
        log.warning("no Douban metadata file for %s (%s): its items get empty titles, text from user tags", d, douban.META_FILES[d])
    con.execute(f"""CREATE TABLE texts AS
        SELECT coalesce(m.k, t.k) AS k, json_array(m.k IS NOT NULL, m.title, t.tags{''.join(f', m.{_q(x)}' for x in text_columns)}) AS fields
        FROM mtext AS m FULL JOIN tags AS t ON m.k = t.k""")

    def texts(values: list) -> dict[str, str]:
        has_meta, title, tags, *rest = values
        row = {"title": douban._text(title) if has_meta and title is not None else "", "categories": tags or ""}
        row.update({name: douban._text(v) if v is not None else "" for name, v in zip(text_columns, rest)})
        return row

    n_items, n_meta = con.execute("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM mtext)").fetchall()[0]
    notes: dict[str, Any] = {"items_without_metadata": int(n_items - n_meta), "metadata_key": keys}
    if missing_meta:
        notes["metadata_missing"] = missing_meta
    if min_rating > 0:
        notes.update(dropped)
    return {"domains": domains, "columns": ["title", "categories", *text_columns], "texts": texts, "time_unit": "s",
            "notes": notes, "source": {"format": "douban", "files": [str(p) for p in [*reviews, *meta]], "min_rating": min_rating}}


def _douban_header(path: Path, what: str) -> list[str]:
    """The header as the Python reader cleans it; a header not alone on line 1 hands over, and
    so does an unreadable one (the Python path words the error, after any earlier bad row)."""
    records = douban._records(path, what, False)
    try:
        header = douban._header(path, records)
    except DataError as e:
        raise Fallback(str(e)) from e
    finally:
        records.close()
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    if not first or "\n" in "".join(header) or len(first.split("\t")) != len(header):
        raise Fallback(f"{path}: a header DuckDB would not skip as one line")
    return header


def _read_tsv(path: Path, width: int) -> str:
    """read_csv for a Douban file, every column as text (c0, c1, ...), past the header line; a row
    with another field count is an error (the Python path then names its line)."""
    columns = _struct({f"c{k}": "VARCHAR" for k in range(width)})
    quoted = str(path).replace("'", "''")
    return (f"read_csv('{quoted}', delim = '\t', quote = '\"', escape = '\"', header = false, skip = 1, "
            f"auto_detect = false, columns = {columns}, strict_mode = true, null_padding = false)")


def _rating_status(rating: str | None, min_rating: float) -> str:
    """keep, below, missing or bad for one raw rating, by read_douban's rules."""
    text = (rating or "").strip()
    if text in douban.MISSING:
        return "missing"
    try:
        return "below" if float(text) < min_rating else "keep"
    except ValueError:
        return "bad"


# ----- filters and ids, in SQL -------------------------------------------------------------------
def _build(con, read: dict[str, Any], cfg: dict) -> PreparedDataset:
    """build_dataset's steps (see its module docstring) on the `inter` and `items` tables."""
    duplicates = check_policies(cfg)
    where = read["source"]["files"][0]
    used = np.array(sorted(d for (d,) in con.execute("SELECT DISTINCT d FROM inter").fetchall()), dtype=np.int64)
    domains, code_of = domain_codes(pd.Series(read["domains"], dtype=object), used, cfg.get("domain_map") or {},
                                    list(cfg.get("domains") or []), where)
    con.execute(f"ALTER TABLE items ADD COLUMN dc TINYINT DEFAULT NULL")
    con.execute(f"UPDATE items SET dc = CASE d WHEN 0 THEN {int(code_of[0])} ELSE {int(code_of[-1])} END")
    # Users numbered by sorted raw id: that number is their rank in every later sort.
    con.execute("CREATE TABLE users AS SELECT u_id, (row_number() OVER (ORDER BY u_id) - 1)::INTEGER AS u "
                "FROM (SELECT DISTINCT u_id FROM inter)")
    con.execute("CREATE TABLE r AS SELECT users.u, items.i, inter.t, inter.rowid AS row, items.dc "
                "FROM inter JOIN users USING (u_id) JOIN items USING (i_id)")
    con.execute("DROP TABLE inter")
    con.execute("SET preserve_insertion_order = false")  # from here on, order lives in the `row` column

    def count() -> dict[str, int]:
        n, u = con.execute("SELECT count(*), count(DISTINCT u) FROM r").fetchall()[0]
        return {"interactions": int(n), "users": int(u)}

    def keep(sql: str, name: str) -> None:
        con.execute(f"CREATE OR REPLACE TABLE r AS {sql}")
        steps.append({"step": name, **count()})

    steps = [{"step": "input", **count()}]
    if con.execute("SELECT count(*) FROM r WHERE dc < 0").fetchall()[0][0]:
        keep("SELECT * FROM r WHERE dc >= 0", "domain_map (dropped domains)")
    start = time_bound(cfg.get("time_min"), read["time_unit"], "timestamp", "time_min")
    end = time_bound(cfg.get("time_max"), read["time_unit"], "timestamp", "time_max")
    if start is not None or end is not None:
        # Bounds are floats, as in filters.time_window (NumPy compares int64 with float64 as floats).
        lo = "true" if start is None else f"t >= {float(start)!r}::DOUBLE"
        hi = "true" if end is None else f"t < {float(end)!r}::DOUBLE"
        keep(f"SELECT * FROM r WHERE {lo} AND {hi}", "time window")
    duplicate_rows = 0
    if duplicates == "drop":
        before = count()["interactions"]
        # The first of rows with the same (user, item, time): rows tie on all three, so first = input order.
        con.execute("CREATE OR REPLACE TABLE r AS SELECT u, i, t, min(row) AS row, any_value(dc) AS dc FROM r GROUP BY u, i, t")
        after = count()
        duplicate_rows = before - after["interactions"]
        if duplicate_rows:
            warn_duplicates(where, duplicate_rows, "timestamp")
            steps.append({"step": "exact duplicate rows", **after})
    if cfg["repeats"] != "keep_all":
        direction = "" if cfg["repeats"] == "keep_first" else " DESC"
        keep(f"SELECT * FROM r QUALIFY row_number() OVER (PARTITION BY u, i ORDER BY t{direction}, row{direction}) = 1",
             f"repeats {cfg['repeats']}")
    min_user, min_item = int(cfg["min_user"]), int(cfg["min_item"])
    if min_user > 0 or min_item > 0:
        # Iterated: dropping users can leave items short and back. Both sides are judged on the
        # same rows each round (as filters.kcore). Degrees are counted once, then lowered by the
        # rows a round removes, so a round is one pass over `r` instead of two GROUP BYs.
        con.execute("CREATE TEMP TABLE du AS SELECT u, count(*) AS n FROM r GROUP BY u")
        con.execute("CREATE TEMP TABLE di AS SELECT i, count(*) AS n FROM r GROUP BY i")
        while True:
            gone = con.execute(f"DELETE FROM r WHERE u IN (SELECT u FROM du WHERE n < {min_user}) "
                               f"OR i IN (SELECT i FROM di WHERE n < {min_item}) RETURNING u, i").fetchnumpy()
            if len(gone["u"]) == 0:
                break
            con.register("gone", pd.DataFrame(gone))
            for side, k in (("u", min_user), ("i", min_item)):  # those below the bound have no rows left
                con.execute(f"CREATE OR REPLACE TEMP TABLE d{side} AS SELECT {side}, n - coalesce(c, 0) AS n FROM d{side} "
                            f"LEFT JOIN (SELECT {side}, count(*) AS c FROM gone GROUP BY {side}) USING ({side}) WHERE n >= {k}")
            con.unregister("gone")
        steps.append({"step": f"k-core users>={cfg['min_user']} items>={cfg['min_item']}", **count()})
    if cfg["max_history"] > 0:
        keep(f"SELECT * FROM r QUALIFY row_number() OVER (PARTITION BY u ORDER BY t DESC, row DESC) <= {int(cfg['max_history'])}",
             f"most recent {cfg['max_history']}")
    con.execute(f"DELETE FROM r WHERE u IN (SELECT u FROM r GROUP BY u HAVING count(*) < {MIN_HISTORY})")
    steps.append({"step": f"users with >= {MIN_HISTORY} interactions", **count()})
    if steps[-1]["interactions"] == 0:
        raise DataError("no interactions left after the filters (see data.time_min/time_max, min_user, min_item)")

    # Histories: by user rank, then time, then input order (build_dataset's stable sort).
    seq = con.execute("SELECT u, i, t FROM r ORDER BY u, t, row").fetchnumpy()
    kept_users = con.execute("SELECT u_id, n FROM (SELECT u, count(*) AS n FROM r GROUP BY u) JOIN users USING (u) "
                             "ORDER BY u").fetchall()
    user_ids = np.asarray([u for u, _ in kept_users], dtype=object)
    counts = np.fromiter((n for _, n in kept_users), dtype=np.int64, count=len(kept_users))
    # Items: domain A first, then raw id; the row order is the global id order. Texts (the
    # reader's `texts` table: a JSON array of raw field values per item) are made for these only.
    kept = con.execute("SELECT i, i_id, dc, texts.fields FROM items LEFT JOIN texts ON texts.k = items.i_id "
                       "WHERE i IN (SELECT DISTINCT i FROM r) ORDER BY dc, i_id").fetchall()
    n_items = con.execute("SELECT count(*) FROM items").fetchall()[0][0]
    codes = np.fromiter((k[0] for k in kept), dtype=np.int64, count=len(kept))
    global_of_code = np.zeros(n_items, dtype=np.int64)
    global_of_code[codes] = np.arange(1, len(kept) + 1)
    empty = dict.fromkeys(read["columns"], "")
    table = pd.DataFrame([empty if k[3] is None else read["texts"](json.loads(k[3])) for k in kept], columns=read["columns"])
    table.insert(0, "item_id", np.asarray([k[1] for k in kept], dtype=object))
    return assemble(table, np.fromiter((k[2] for k in kept), dtype=np.int64, count=len(kept)), domains, user_ids, counts,
                    global_of_code[np.asarray(seq["i"])], np.asarray(seq["t"], dtype=np.int64), read["source"], "timestamp",
                    read["time_unit"], {"steps": steps, "duplicate_rows_dropped": duplicate_rows,
                                        "items_dropped": int(n_items - len(kept)), **read["notes"]})


# ----- SQL helpers -----------------------------------------------------------------------------
def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _struct(columns: dict[str, str]) -> str:
    """read_json's `columns` argument: {'user_id': 'JSON'} -> {'user_id': 'JSON'} in SQL."""
    return "{" + ", ".join(f"'{k.replace(chr(39), chr(39) * 2)}': '{v}'" for k, v in columns.items()) + "}"
