"""The Douban dump ("douban_dataset(text information)", released with DTCDR by Zhu et al.): two
review files as the two domains, book and movie.

Files are tab-separated with a quoted header row; text fields are quoted with '"' (a quote inside
is doubled) and may hold tabs and newlines:
  bookreviews_cleaned.txt   user_id, book_id, rating, labels, comment, time, ID
  moviereviews_cleaned.txt  user_id, movie_id, rating, labels, comment, time, ID
  books_cleaned.txt, movies_cleaned.txt: item metadata; the columns vary between copies.
`labels` holds the user's tags for the item separated by '|'; `time` is a date (YYYY-MM-DD).
The domain of a review file is its id column (book_id -> book), so musicreviews_cleaned.txt
(music_id) works the same way.

The metadata files carry two ids: `<domain>_id` (the Douban page id) and `UID` (the dump's own
renumbering). Copies differ in which one the review files use, so the metadata key is the
column that matches more of the reviewed ids (recorded in the prepare report).

Records are read with the csv module (the same quoting rules as pandas with sep="\\t",
quotechar='"'), streamed, so each error can name the physical line where its record starts,
which pandas cannot once a quoted field spans lines. A row with the wrong number of fields is an
error rather than a silent shift of columns: pandas quietly takes the first column as the index
when the first data row has one field too many (a backslash-escaped quote followed by a tab).
"""
from __future__ import annotations

import csv
import logging
import re
from array import array
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

# The Amazon importer's line streaming (progress bar, gzip) and bad-line policy apply here unchanged.
from llm4cdsr.data.amazon import MAX_TEXT_CHARS, _BadLines, open_lines
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.raw import MAX_ID_CHARS, RawData, check_items

log = logging.getLogger(__name__)

REVIEW_FILES = {"book": "bookreviews_cleaned.txt", "movie": "moviereviews_cleaned.txt", "music": "musicreviews_cleaned.txt"}
META_FILES = {"book": "books_cleaned.txt", "movie": "movies_cleaned.txt", "music": "music_cleaned.txt"}
DEFAULT_DOMAINS = ("book", "movie")  # the paper's pair; a folder is read as these two
DUMP_FOLDER = "douban_dataset(text information)"  # the folder name inside the released archive
TITLE_COLUMNS = ("title", "name")  # first present wins
# Metadata columns kept as item text fields (name in the file -> name in the items table);
# `summary` becomes `description` so the default item text template shows it.
TEXT_COLUMNS = {"author": "author", "director": "director", "writer": "writer", "publisher": "publisher",
                "pubdate": "pubdate", "country": "country", "language": "language", "summary": "description"}
TOP_TAGS = 10  # an item's `categories`: its most frequent user tags, at most this many
# Values that mean "no value" in these dumps (R writes NA, Python scripts None).
MISSING = frozenset({"", "NA", "N/A", "None", "none", "nan", "NaN", "null", "NULL"})
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")


# ----- which files ------------------------------------------------------------------------------
def _dump_folder(folder: Path) -> Path:
    """The folder itself, or the dump folder inside it (where the archive unpacks)."""
    inner = folder / DUMP_FOLDER
    if not any((folder / REVIEW_FILES[d]).is_file() for d in DEFAULT_DOMAINS) and inner.is_dir():
        return inner
    return folder


def is_douban_folder(folder: Path) -> bool:
    folder = _dump_folder(folder)
    return any((folder / REVIEW_FILES[d]).is_file() for d in DEFAULT_DOMAINS)


def is_douban_review(path: Path) -> bool:
    return path.name in REVIEW_FILES.values()


def douban_inputs(interactions: list[Path], items: list[Path]) -> tuple[list[Path], list[Path]]:
    """(review files, metadata files) named by data.interactions (a folder, or two review files)
    and data.items (metadata files; default: those beside the review files, where present)."""
    if len(interactions) == 1 and interactions[0].is_dir():
        folder = _dump_folder(interactions[0])
        reviews = [folder / REVIEW_FILES[d] for d in DEFAULT_DOMAINS]
        missing = [p.name for p in reviews if not p.is_file()]
        if missing:
            raise DataError(f"{folder}: no {' or '.join(missing)} in this folder (the Douban format reads "
                            f"{REVIEW_FILES['book']} and {REVIEW_FILES['movie']}, or give two review files)")
    elif len(interactions) == 2:
        reviews = list(interactions)
        for p in reviews:
            if not p.is_file():
                raise DataError(f"Douban review file not found: {p}")
    else:
        raise DataError(f"data.interactions: the Douban format takes the folder holding {REVIEW_FILES['book']} and "
                        f"{REVIEW_FILES['movie']} (--douban DIR), or those two files; got {len(interactions)} path(s)")
    if items:
        for p in items:
            if not p.is_file():
                raise DataError(f"Douban metadata file not found: {p}")
        return reviews, list(items)
    beside = [p.parent / META_FILES[d] for p in reviews for d, name in REVIEW_FILES.items() if p.name == name]
    return reviews, [p for p in beside if p.is_file()]


# ----- reading ----------------------------------------------------------------------------------
def _records(path: Path, desc: str, progress: bool) -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, fields) for each record; the header is the first one."""
    with open_lines(path, desc, progress) as lines:

        def text() -> Iterator[str]:
            for lineno, raw in lines:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from e
                yield line.lstrip("\ufeff") if lineno == 1 else line

        # skipinitialspace: some copies put a space after the tab, before the opening quote.
        reader = csv.reader(text(), delimiter="\t", quotechar='"', doublequote=True, skipinitialspace=True)
        end = 0
        try:
            for row in reader:
                start, end = end + 1, reader.line_num
                if row:  # a blank line reads as []
                    yield start, row
        except csv.Error as e:  # e.g. an unbalanced quote swallowing the rest of the file
            raise DataError(f"{path}:{end + 1}: cannot read this record ({e}); an unbalanced quote?") from e


def _header(path: Path, records: Iterator[tuple[int, list[str]]]) -> list[str]:
    for _, row in records:
        return [h.strip().strip('"').strip() for h in row]
    raise DataError(f"{path}: empty file")


def _columns(path: Path, header: list[str], names: list[str]) -> list[int]:
    missing = [c for c in names if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
                        f"(it has {', '.join(repr(c) for c in header)})")
    return [header.index(c) for c in names]


def parse_date(text: str) -> int | None:
    """'2010-01-05' (optionally with ' HH:MM[:SS]') -> unix seconds at UTC; None if not a date."""
    m = _DATE.fullmatch(text.strip())
    if m is None:
        return None
    y, mo, d, hh, mm, ss = (int(g) if g else 0 for g in m.groups())
    try:
        return int(datetime(y, mo, d, hh, mm, ss, tzinfo=timezone.utc).timestamp())
    except ValueError:  # 2010-02-30, month 13, ...
        return None


def _text(value: str) -> str:
    text = " ".join(value.split())
    return "" if text in MISSING else text[:MAX_TEXT_CHARS]


def _review_domain(path: Path, header: list[str]) -> str:
    ids = [c for c in header if c.endswith("_id") and c[: -len("_id")] in REVIEW_FILES]
    if len(ids) != 1:
        expected = " or ".join(repr(f"{d}_id") for d in REVIEW_FILES)
        raise DataError(f"{path}: needs one item id column, {expected} (it has {', '.join(repr(c) for c in header)})")
    return ids[0][: -len("_id")]


def _meta_domain(path: Path, header: list[str], domains: list[str]) -> str:
    for d in domains:
        if f"{d}_id" in header or path.name == META_FILES[d]:
            return d
    raise DataError(f"{path}: cannot tell which domain this metadata file describes (no "
                    f"{' / '.join(f'{d}_id' for d in domains)} column, and not named "
                    f"{' / '.join(META_FILES[d] for d in domains)})")


def read_douban(reviews: list[str | Path], meta: list[str | Path] = (), min_rating: float = 0,
                skip_bad_lines: bool = False, progress: bool = True) -> RawData:
    """Two Douban review files (one per domain) and their metadata files -> RawData.

    Item ids are `<domain>:<id>` (`book:12`): the dump numbers each domain on its own, so a
    book and a movie can share an id. With `min_rating` > 0, reviews rated below it or without
    a rating are dropped (counted); 0 keeps every review, the ratings as implicit feedback."""
    if len(reviews) != 2:
        raise DataError(f"data.interactions: give exactly two Douban review files, one per domain (got {len(reviews)})")
    bad = _BadLines(skip_bad_lines)
    user_code: dict[str, int] = {}
    raw_codes: dict[str, dict[str, int]] = {}  # domain -> raw item id -> item code
    item_raw: list[str] = []
    item_domain: list[str] = []
    tags: dict[int, Counter] = {}
    users, items, times = array("i"), array("i"), array("q")
    dates: dict[str, int] = {}  # a few thousand distinct days: parse each once
    dropped = {"ratings_below_min": 0, "ratings_missing": 0}

    for path in map(Path, reviews):
        records = _records(path, "reviews", progress)
        header = _header(path, records)
        domain = _review_domain(path, header)
        if domain in raw_codes:
            raise DataError(f"{reviews[0]} and {reviews[1]}: both are {domain} reviews; give one file per domain")
        codes = raw_codes[domain] = {}
        iu, ii, it = _columns(path, header, ["user_id", f"{domain}_id", "time"])
        ir = _columns(path, header, ["rating"])[0] if min_rating > 0 else -1
        il = header.index("labels") if "labels" in header else -1
        width = len(header)
        for start, row in records:
            if len(row) != width:
                bad(path, start, f"{len(row)} fields where the header has {width} (a tab or quote in a badly quoted field?)")
                continue
            user, item, day = row[iu].strip(), row[ii].strip(), row[it]
            if not user or not item:
                bad(path, start, f"empty '{'user_id' if not user else f'{domain}_id'}'")
                continue
            if len(user) > MAX_ID_CHARS or len(item) > MAX_ID_CHARS:
                which = "user_id" if len(user) > MAX_ID_CHARS else f"{domain}_id"
                bad(path, start, f"'{which}' is longer than {MAX_ID_CHARS} characters; ids are keys, not text")
                continue
            t = dates.get(day)
            if t is None:
                t = parse_date(day)
                if t is None:
                    bad(path, start, f"'time' is not a date like 2010-01-31: {day!r}")
                    continue
                dates[day] = t
            if ir >= 0:
                rating = row[ir].strip()
                if rating in MISSING:
                    dropped["ratings_missing"] += 1
                    continue
                try:
                    value = float(rating)
                except ValueError:
                    bad(path, start, f"'rating' is not a number: {rating!r}")
                    continue
                if value < min_rating:
                    dropped["ratings_below_min"] += 1
                    continue
            code = codes.get(item)
            if code is None:
                code = codes[item] = len(item_raw)
                item_raw.append(item)
                item_domain.append(domain)
            labels = row[il] if il >= 0 else ""
            if labels not in MISSING:
                counter = tags.get(code)
                if counter is None:
                    counter = tags[code] = Counter()
                for tag in labels.split("|"):
                    tag = tag.strip()
                    if tag not in MISSING:
                        counter[tag] += 1
            users.append(user_code.setdefault(user, len(user_code)))
            items.append(code)
            times.append(t)
    if not items:
        raise DataError(f"{reviews[0]}, {reviews[1]}: no reviews read")

    # Metadata: one pass per file, keeping rows of reviewed items under each candidate key
    # column; the column matching more reviewed items is the key. First row of an item wins.
    domains = list(raw_codes)
    meta_rows: dict[int, dict[str, str]] = {}
    keys: dict[str, str] = {}
    text_columns: list[str] = []
    for path in map(Path, meta):
        records = _records(path, "metadata", progress)
        header = _header(path, records)
        domain = _meta_domain(path, header, domains)
        if domain in keys:
            raise DataError(f"{path}: a second metadata file for {domain}; give one per domain")
        candidates = [c for c in ("UID", f"{domain}_id") if c in header]
        if not candidates:
            raise DataError(f"{path}: missing column 'UID' or '{domain}_id' (it has {', '.join(repr(c) for c in header)})")
        title = next((header.index(c) for c in TITLE_COLUMNS if c in header), -1)
        if title < 0:
            log.warning("%s: no %s column; its items get empty titles", path, " or ".join(TITLE_COLUMNS))
        kept = [(header.index(c), name) for c, name in TEXT_COLUMNS.items() if c in header]
        text_columns += [name for _, name in kept if name not in text_columns]
        key_index = {c: header.index(c) for c in candidates}
        found: dict[str, dict[int, dict[str, str]]] = {c: {} for c in candidates}
        wanted, width = raw_codes[domain], len(header)
        for start, row in records:
            if len(row) != width:
                bad(path, start, f"{len(row)} fields where the header has {width} (a tab or quote in a badly quoted field?)")
                continue
            fields = None
            for c, idx in key_index.items():
                code = wanted.get(row[idx].strip())
                if code is not None and code not in found[c]:
                    if fields is None:
                        fields = {name: _text(row[i]) for i, name in kept}
                        fields["title"] = _text(row[title]) if title >= 0 else ""
                    found[c][code] = fields
        keys[domain] = max(candidates, key=lambda c: len(found[c]))  # ties: UID, listed first
        meta_rows.update(found[keys[domain]])
    missing_meta = [d for d in domains if d not in keys]
    for d in missing_meta:
        log.warning("no Douban metadata file for %s (%s): its items get empty titles, text from user tags", d, META_FILES[d])

    n = len(item_raw)
    empty = dict.fromkeys(["title", *text_columns], "")
    rows = [meta_rows.get(c, empty) for c in range(n)]
    table = pd.DataFrame({
        "item_id": np.asarray([f"{d}:{i}" for d, i in zip(item_domain, item_raw)], dtype=object),
        "domain": np.asarray(item_domain, dtype=object),
        "title": np.asarray([r["title"] for r in rows], dtype=object),
        "categories": np.asarray([", ".join(t for t, _ in tags[c].most_common(TOP_TAGS)) if c in tags else ""
                                  for c in range(n)], dtype=object),
    })
    for name in text_columns:
        table[name] = np.asarray([r.get(name, "") for r in rows], dtype=object)
    check_items(table, f"{reviews[0]}, {reviews[1]}")

    notes: dict[str, Any] = {"items_without_metadata": int(n - len(meta_rows)), "metadata_key": keys}
    if missing_meta:
        notes["metadata_missing"] = missing_meta
    if min_rating > 0:
        notes.update(dropped)
    bad.note(notes)
    return RawData.from_streamed(user_code, users, items, times, table, "s",
                                 {"format": "douban", "files": [str(p) for p in [*reviews, *meta]], "min_rating": min_rating},
                                 notes)

