"""The Douban dump ("douban_dataset(text information)"), fixture files written here in its real form:
tab-separated, quoted header, quoted text fields (inner quotes doubled) that may hold tabs and
newlines, ratings unquoted as R's write.table leaves numbers."""
import json

import pytest

from llm4cdsr.data.douban import douban_inputs, parse_date, read_douban
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.prepare import build_dataset, load_raw, resolve_inputs

DAY = 86_400
JAN1 = 1_262_304_000  # 2010-01-01 00:00 UTC


def q(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def table(header, rows) -> str:
    """Header quoted; numbers bare, text quoted (ratings and ID stay unquoted, as R writes them)."""
    lines = ["\t".join(q(h) for h in header)]
    for row in rows:
        lines.append("\t".join(str(v) if isinstance(v, int) else q(v) for v in row))
    return "\n".join(lines) + "\n"


def review_rows(kind):
    # (user, item id, rating, labels, comment, date)
    if kind == "book":
        return [
            ("u1", "1", 5, "小说|经典", 'good\tbook, "really" good', "2010-01-05"),
            ("u1", "2", 4, "科幻", "two\nlines", "2010-01-07"),
            ("u2", "1", 3, "经典|小说|村上春树", "", "2010-01-01"),
            ("u2", "3", 2, "科幻", "NA", "2010-01-02"),
            ("u3", "3", 5, " 科幻 | 太空 |", "x", "2010-01-03"),
        ]
    return [
        ("u1", "1", 5, "剧情", "same day as book 1", "2010-01-05"),
        ("u2", "2", 4, "NA", "", "2010-01-01"),
        ("u3", "1", 3, "剧情|爱情", "", "2010-01-04"),
        ("u3", "2", 1, "", "", "2010-01-06"),
        ("u4", "1", 5, "", "one review only", "2010-01-09"),
    ]


def write_dump(folder, book_rows=None, movie_rows=None, book_meta=True, extra_lines=""):
    folder.mkdir(parents=True, exist_ok=True)
    for kind, rows in (("book", book_rows or review_rows("book")), ("movie", movie_rows or review_rows("movie"))):
        header = ["user_id", f"{kind}_id", "rating", "labels", "comment", "time", "ID"]
        body = [(u, i, r, lab, c, t, n) for n, (u, i, r, lab, c, t) in enumerate(rows, 1)]
        text = table(header, body) + (extra_lines if kind == "book" else "")
        (folder / f"{kind}reviews_cleaned.txt").write_text(text, encoding="utf-8")
    if book_meta:
        # UID is the id the reviews use; book_id (the Douban page id) of UID 2 happens to be "1".
        (folder / "books_cleaned.txt").write_text(table(
            ["book_id", "title", "author", "publisher", "summary", "UID"],
            [("1000067", "挪威的森林", "村上春树", "上海译文出版社", "A novel\nabout\tTokyo.", "1"),
             ("1", "Dune", "Frank Herbert", "NA", 'The "spice" must flow.', "2"),
             ("1000099", "Never reviewed", "", "", "", "99")]), encoding="utf-8")
    (folder / "movies_cleaned.txt").write_text(table(
        ["movie_id", "name", "director", "summary", "writer", "country", "pubdate", "language", "rating", "tag", "UID"],
        [("1292052", "肖申克的救赎", "Frank Darabont", "Hope.", "Stephen King", "美国", "1994-09-10", "英语", "9.7",
          "['经典', '剧情']", "1")]), encoding="utf-8")
    return folder


def test_dump_prepares(tmp_path):
    folder = write_dump(tmp_path / "douban")
    reviews, meta = douban_inputs([folder], [])
    assert [p.name for p in reviews] == ["bookreviews_cleaned.txt", "moviereviews_cleaned.txt"]
    assert [p.name for p in meta] == ["books_cleaned.txt", "movies_cleaned.txt"]
    raw = read_douban(reviews, meta, progress=False)
    assert raw.n_interactions == 10 and raw.time_unit == "s"
    assert raw.notes["metadata_key"] == {"book": "UID", "movie": "UID"}  # UID matches 2 books, book_id only 1
    assert raw.notes["items_without_metadata"] == 2  # book 3, movie 2

    ds = build_dataset(raw)
    assert ds.domains == ("book", "movie") and ds.n_items == (3, 2)  # book and movie "1" stay apart
    assert list(ds.user_ids) == ["u1", "u2", "u3"]  # u4 has one review
    lookup = ds.item_lookup()
    # Same-day ties keep the file order (book file first): u1 book:1 and movie:1 on 2010-01-05.
    assert ds.sequence(0).tolist() == [lookup[i] for i in ("book:1", "movie:1", "book:2")]
    assert ds.sequence(1).tolist() == [lookup[i] for i in ("book:1", "movie:2", "book:3")]
    assert ds.sequence(2).tolist() == [lookup[i] for i in ("book:3", "movie:1", "movie:2")]
    assert ds.seq_times[:3].tolist() == [JAN1 + 4 * DAY, JAN1 + 4 * DAY, JAN1 + 6 * DAY]
    by_id = ds.items.set_index("raw_id")
    assert by_id.loc["book:1", "title"] == "挪威的森林" and by_id.loc["book:1", "author"] == "村上春树"
    assert by_id.loc["book:1", "description"] == "A novel about Tokyo."
    assert by_id.loc["book:2", "title"] == "Dune" and by_id.loc["book:2", "publisher"] == ""
    assert by_id.loc["book:2", "description"] == 'The "spice" must flow.'
    assert by_id.loc["movie:1", "title"] == "肖申克的救赎" and by_id.loc["movie:1", "director"] == "Frank Darabont"
    assert by_id.loc["movie:1", "country"] == "美国" and by_id.loc["movie:1", "author"] == ""
    # Tags: most frequent first, ties in order of appearance; "NA" and empty pieces are no tags.
    assert by_id.loc["book:1", "categories"] == "小说, 经典, 村上春树"
    assert by_id.loc["book:3", "categories"] == "科幻, 太空"
    assert by_id.loc["book:3", "title"] == "" and by_id.loc["movie:2", "categories"] == ""
    assert ds.meta["prepare_report"]["empty_titles"] == 2


def test_metadata_by_page_id_and_missing_metadata(tmp_path):
    folder = write_dump(tmp_path / "d", book_meta=False)
    # A copy whose metadata has no UID: the reviews use the page id.
    (folder / "meta_books.txt").write_text(table(["book_id", "title"], [("3", "Solaris")]), encoding="utf-8")
    reviews, meta = douban_inputs([folder], [folder / "meta_books.txt", folder / "movies_cleaned.txt"])
    raw = read_douban(reviews, meta, progress=False)
    assert raw.notes["metadata_key"]["book"] == "book_id"
    titles = dict(zip(raw.items["item_id"], raw.items["title"]))
    assert titles["book:3"] == "Solaris" and titles["book:1"] == ""
    raw = read_douban(reviews, [folder / "movies_cleaned.txt"], progress=False)
    assert raw.notes["metadata_missing"] == ["book"] and raw.notes["items_without_metadata"] == 4


def test_min_rating(tmp_path):
    folder = write_dump(tmp_path / "d", movie_rows=[*review_rows("movie"), ("u5", "9", "NA", "", "", "2010-01-01")])
    reviews, meta = douban_inputs([folder], [])
    assert read_douban(reviews, meta, progress=False).n_interactions == 11  # 0: every review, unrated too
    raw = read_douban(reviews, meta, min_rating=3, progress=False)
    assert raw.n_interactions == 8
    assert raw.notes["ratings_below_min"] == 2 and raw.notes["ratings_missing"] == 1


def test_bad_date_names_file_and_line(tmp_path):
    # Line 1 header, 2 book 1, 3-4 the two-line comment, so the fifth record starts on line 7.
    rows = review_rows("book")
    rows[4] = ("u3", "3", 5, "科幻", "x", "2010-13-03")
    folder = write_dump(tmp_path / "d", book_rows=rows)
    reviews, meta = douban_inputs([folder], [])
    with pytest.raises(DataError, match=r"bookreviews_cleaned.txt:7: 'time' is not a date like 2010-01-31: '2010-13-03'"):
        read_douban(reviews, meta, progress=False)
    raw = read_douban(reviews, meta, skip_bad_lines=True, progress=False)
    assert raw.n_interactions == 9 and list(raw.notes["bad_lines_skipped"].values()) == [1]
    assert parse_date("2010-1-5") == JAN1 + 4 * DAY and parse_date("2010-01-05 12:00:00") == JAN1 + 4.5 * DAY
    assert parse_date("20100105") is None and parse_date("2010-02-30") is None


def test_wrong_field_count_is_an_error_not_a_shift(tmp_path):
    # A backslash-escaped quote (R's default) then a tab: the comment splits into two fields.
    broken = '"u9"\t"1"\t5\t"小说"\t"he said \\"hi\tthere\\" ok"\t"2010-01-08"\t6\n'
    folder = write_dump(tmp_path / "d", extra_lines=broken)
    reviews, meta = douban_inputs([folder], [])
    with pytest.raises(DataError, match=r"bookreviews_cleaned.txt:8: 8 fields where the header has 7"):
        read_douban(reviews, meta, progress=False)
    assert read_douban(reviews, meta, skip_bad_lines=True, progress=False).n_interactions == 10


def test_missing_file_and_column(tmp_path):
    folder = write_dump(tmp_path / "d")
    (folder / "moviereviews_cleaned.txt").unlink()
    with pytest.raises(DataError, match=r"no moviereviews_cleaned.txt in this folder"):
        douban_inputs([folder], [])
    with pytest.raises(DataError, match=r"Douban metadata file not found: .*nope.txt"):
        douban_inputs([folder / "bookreviews_cleaned.txt", folder / "bookreviews_cleaned.txt"], [folder / "nope.txt"])
    (folder / "moviereviews_cleaned.txt").write_text(
        table(["user_id", "movie_id", "rating", "labels", "comment", "ID"], [("u1", "1", 5, "", "", 1)]), encoding="utf-8")
    with pytest.raises(DataError, match=r"moviereviews_cleaned.txt: missing column\(s\) 'time' \(it has 'user_id', 'movie_id'"):
        read_douban(*douban_inputs([folder], []), progress=False)
    (folder / "moviereviews_cleaned.txt").write_text(table(["user_id", "item", "time"], [("u1", "1", "2010-01-01")]))
    with pytest.raises(DataError, match=r"needs one item id column, 'book_id' or 'movie_id'"):
        read_douban(*douban_inputs([folder], []), progress=False)
    write_dump(folder)
    (folder / "movies_cleaned.txt").write_text(table(["name", "director"], [("x", "y")]), encoding="utf-8")
    with pytest.raises(DataError, match=r"movies_cleaned.txt: missing column 'UID' or 'movie_id'"):
        read_douban(*douban_inputs([folder], []), progress=False)


def test_config_route_auto_detects_the_folder(tmp_path):
    folder = write_dump(tmp_path / "dump" / "douban_dataset(text information)")
    # The folder the archive unpacks to works too, and `auto` recognises the dump.
    inputs = resolve_inputs({"format": "auto", "interactions": str(tmp_path / "dump")})
    assert inputs["format"] == "douban" and len(inputs["files"]) == 4
    files = resolve_inputs({"interactions": [str(folder / "bookreviews_cleaned.txt"), str(folder / "moviereviews_cleaned.txt")]})
    assert files["format"] == "douban" and [p.name for p in files["items"]] == ["books_cleaned.txt", "movies_cleaned.txt"]
    raw = load_raw({"format": "douban", "interactions": str(folder), "douban_min_rating": 4}, progress=False)
    assert raw.source["format"] == "douban" and raw.n_interactions == 6


def test_prepare_command_and_preset(tmp_path, capsys):
    from llm4cdsr.cli import main
    from llm4cdsr.config import load_config

    data = load_config(["douban-book-movie"])["data"]
    assert data["format"] == "douban" and (data["min_user"], data["min_item"]) == (5, 3)
    assert data["domains"] == ["book", "movie"]

    folder = write_dump(tmp_path / "douban")
    ws = tmp_path / "ws"
    assert main(["prepare", "--douban", str(folder), "--out", str(ws), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(douban," in out and "book 3 + movie 2" in out and "items without metadata: 2" in out
    meta = json.loads((ws / "dataset" / "meta.json").read_text())
    assert meta["prepare_report"]["metadata_key"] == {"book": "UID", "movie": "UID"}
    assert main(["prepare", "--douban", str(folder), "--out", str(ws)]) == 0
    assert "dataset is current" in capsys.readouterr().out
    assert main(["prepare", "--douban", str(folder), "--out", str(ws), "data.douban_min_rating=3", "--no-progress"]) == 0
    assert "dataset is current" not in capsys.readouterr().out
    assert main(["prepare", "--douban", str(folder), "--format", "table", "--out", str(ws)]) == 2
    assert "--douban DIR names the input and its format" in capsys.readouterr().err
