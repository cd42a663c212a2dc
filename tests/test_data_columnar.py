"""The DuckDB engine (data.engine) against the Python path, the reference: the same prepared dataset,
array for array, on the fixtures of the Amazon and Douban tests under every filter; input the
engine could read differently goes to the Python path; bad input is still one line naming the file
and line."""
import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
from test_data_amazon import FOOD, KITCHEN, dumps_2018, dumps_2023, write_lines
from test_data_douban import review_rows, write_dump

from llm4cdsr.config import load_config
from llm4cdsr.data import columnar
from llm4cdsr.data.build import build_dataset, default_data_config
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.prepare import load_raw, resolve_inputs, run_prepare

pytestmark = pytest.mark.skipif(columnar.duckdb is None, reason="DuckDB is not installed")

# Filters the fixtures go through: each changes which rows survive, or their order.
OPTIONS = [
    {},
    {"min_user": 2, "min_item": 2},  # nothing left in the small fixtures: the same error
    {"min_user": 3, "min_item": 1},
    {"min_user": 3, "min_item": 1, "max_history": 2},
    {"repeats": "keep_first"},
    {"repeats": "keep_last", "duplicates": "keep"},
    {"domain_map": {"Grocery_and_Gourmet_Food": "food", "Home_and_Kitchen": "kitchen"}, "domains": ["kitchen", "food"]},
]


def assert_same(a: PreparedDataset, b: PreparedDataset) -> None:
    assert a.domains == b.domains and a.n_items == b.n_items
    pd.testing.assert_frame_equal(a.items, b.items)
    for name in ("user_ids", "seq_offsets", "seq_items", "seq_times"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    drop = ("engine", "data_config", "config_hash")
    assert {k: v for k, v in a.meta.items() if k not in drop} == {k: v for k, v in b.meta.items() if k not in drop}


def both(data: dict) -> tuple[PreparedDataset, PreparedDataset] | None:
    """(Python path, engine) datasets of one `data` section; the engine must not hand over. Where
    the Python path stops with an error (nothing left after the filters), the engine must stop
    with the same one (None)."""
    cfg = {**default_data_config(), **data}
    inputs = resolve_inputs(cfg)
    try:
        reference = build_dataset(load_raw(cfg, inputs, progress=False), cfg)
    except DataError as e:
        with pytest.raises(DataError, match=re.escape(str(e))):
            columnar.prepare_dump(cfg, inputs, progress=False)
        return None
    engine = columnar.prepare_dump(cfg, inputs, progress=False)
    assert engine is not None, "the engine handed this input to the Python path"
    return reference, engine


def check(data: dict) -> None:
    made = both(data)
    if made is not None:
        assert_same(*made)


def amazon_inputs(reviews, meta) -> dict:
    return {"reviews": [str(p) for p in reviews], "meta": [str(p) for p in meta]}


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("dump", ["2018", "2023", "2023-plain"])
def test_amazon_fixtures_give_the_python_path_dataset(tmp_path, dump, options):
    reviews, meta = dumps_2018(tmp_path) if dump == "2018" else dumps_2023(tmp_path, gz=dump == "2023")
    if "domain_map" not in options:
        options = {**options, "domain_map": {}}
    check({**amazon_inputs(reviews, meta), **options})


def test_time_window_ties_and_duplicates(tmp_path):
    # Equal times across both files (ties: file order), an exact duplicate line, a repeated pair.
    food = [*FOOD, ("U1", "F1", 100), ("U1", "F3", 200), ("U3", "F1", 20), ("U2", "F2", 70)]
    kitchen = [*KITCHEN, ("U1", "K2", 100), ("U2", "K1", 300), ("U3", "K1", 10)]

    def review(u, i, t):
        return {"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": 4.0}

    reviews = [write_lines(tmp_path / "Food_5.json.gz", [review(*r) for r in food]),
               write_lines(tmp_path / "Kitchen_5.json", [review(*r) for r in kitchen])]
    meta = [write_lines(tmp_path / "meta_Food.json", [{"asin": "F1", "title": "Tea", "price": 5.0, "brand": 7},
                                                     {"asin": "F1", "title": "second row: not used"},
                                                     {"asin": "F2", "title": None, "category": [["a", 1.5], None, ""]}])]
    data = amazon_inputs(reviews, meta)
    for options in ({"time_min": 15, "time_max": 250}, {"time_min": "1970-01-01T00:00:20"}, {"repeats": "keep_last"},
                    {"min_user": 4, "min_item": 2}, {"duplicates": "keep", "max_history": 3}):
        check({**data, **options})
    reference, engine = both(data)
    assert engine.meta["prepare_report"]["duplicate_rows_dropped"] == 1
    assert engine.items.set_index("raw_id").loc["F1", "price"] == "5.0"  # Python's str(5.0), not DuckDB's '5'


def test_prepare_writes_the_same_files(tmp_path):
    reviews, meta = dumps_2023(tmp_path, gz=True)
    saved = {}
    for engine in ("python", "duckdb"):
        cfg = load_config([], [f"workspace={tmp_path / engine}", f"data.engine={engine}", "data.min_user=2"])
        cfg["data"].update(amazon_inputs(reviews, meta))
        ds = run_prepare(cfg, progress=False)
        assert ds.meta["engine"].startswith(engine)
        saved[engine] = tmp_path / engine / "dataset"
    assert_same(PreparedDataset.load(saved["python"]), PreparedDataset.load(saved["duckdb"]))
    for name in ("stats.json", "meta.json"):
        a, b = (json.loads((saved[e] / name).read_text()) for e in ("python", "duckdb"))
        a.pop("engine", None), b.pop("engine", None), a.pop("data_config", None), b.pop("data_config", None)
        assert a == b, name
    # Switching the engine leaves the dataset current: both make the same one.
    cfg = load_config([], [f"workspace={tmp_path / 'duckdb'}", "data.engine=python", "data.min_user=2"])
    cfg["data"].update(amazon_inputs(reviews, meta))
    assert run_prepare(cfg, progress=False).meta["engine"].startswith("duckdb")


def test_values_the_engine_would_read_differently_go_to_the_python_path(tmp_path, caplog):
    # A numeric id (Python: str(7) = '7'), a boolean id ('True'), a float time (int() truncates),
    # a time written as text: the Python path decides what each means.
    reviews, meta = dumps_2018(tmp_path)
    odd = [(7, "F1", 5), ("U7", "F2", 6.9), ("U7", "F3", "7"), (True, "F1", 8), ("U7", "F1", 9)]
    write_lines(reviews[0], [{"reviewerID": u, "asin": i, "unixReviewTime": t} for u, i, t in [*FOOD, *odd]])
    cfg = {**default_data_config(), **amazon_inputs(reviews, meta)}
    with caplog.at_level(logging.INFO, logger="llm4cdsr.data.columnar"):
        assert columnar.prepare_dump(cfg, resolve_inputs(cfg), progress=False) is None
    assert "Python path" in caplog.text
    made = []
    for engine in ("python", "duckdb"):
        ws = load_config([], [f"workspace={tmp_path / engine}", f"data.engine={engine}"])
        ws["data"].update(amazon_inputs(reviews, meta))
        made.append(run_prepare(ws, progress=False))
        assert made[-1].meta["engine"] == "python"
    assert_same(*made)
    assert "U7" in set(made[0].user_ids)


@pytest.mark.parametrize("engine", ["python", "duckdb"])
def test_a_bad_line_is_one_error_naming_the_file_and_line(tmp_path, engine):
    reviews, meta = dumps_2018(tmp_path, bad_line='{"reviewerID": "U9", "asin": \n')
    cfg = load_config([], [f"workspace={tmp_path / 'ws'}", f"data.engine={engine}"])
    cfg["data"].update(amazon_inputs(reviews, meta))
    with pytest.raises(DataError, match=r"Grocery_and_Gourmet_Food_5.json.gz:6: malformed JSON .*--skip-bad-lines"):
        run_prepare(cfg, progress=False)
    cfg["data"]["skip_bad_lines"] = True
    ds = run_prepare(cfg, progress=False)
    assert ds.meta["prepare_report"]["bad_lines_skipped"] == {str(reviews[0]): 1}
    assert ds.meta["engine"] == "python"  # the engine cannot count skipped lines as the Python path does


def test_a_bad_metadata_line_and_an_item_in_both_domains(tmp_path):
    reviews, meta = dumps_2018(tmp_path)
    write_lines(meta[1], [{"asin": "K1", "title": "Pan"}, {"title": "no asin"}])
    cfg = {**default_data_config(), **amazon_inputs(reviews, meta)}
    assert columnar.prepare_dump(cfg, resolve_inputs(cfg), progress=False) is None
    with pytest.raises(DataError, match=r"meta_Home_and_Kitchen.json.gz:2: missing field 'asin'"):
        load_raw(cfg, progress=False)
    reviews, meta = dumps_2018(tmp_path)
    write_lines(reviews[1], [{"reviewerID": "U1", "asin": "F1", "unixReviewTime": 5}])
    assert columnar.prepare_dump(cfg, resolve_inputs(cfg), progress=False) is None


def test_engine_setting(tmp_path):
    assert columnar.engine_for({"engine": "auto"}, "amazon2023") == "duckdb"
    assert columnar.engine_for({"engine": "duckdb"}, "table") == "python"  # tables: pandas reads them column-wise
    assert columnar.engine_for({"engine": "python"}, "douban") == "python"
    with pytest.raises(DataError, match="data.engine must be one of auto, python, duckdb, got 'polars'"):
        columnar.engine_for({"engine": "polars"}, "amazon")


def douban_dumps(tmp_path):
    """The Douban test's dumps: the standard one, metadata keyed by page id, one metadata file
    missing, unrated reviews, and tags and ids wrapped in Python whitespace DuckDB's trim() keeps."""
    from test_data_douban import table

    yield {"interactions": str(write_dump(tmp_path / "d"))}
    folder = write_dump(tmp_path / "page", book_meta=False)
    (folder / "meta_books.txt").write_text(table(["book_id", "title"], [("3", "Solaris"), ("3", "second row")]),
                                           encoding="utf-8")
    yield {"interactions": str(folder), "items": [str(folder / "meta_books.txt"), str(folder / "movies_cleaned.txt")]}
    yield {"interactions": str(folder), "items": [str(folder / "movies_cleaned.txt")]}
    rows = [*review_rows("movie"), ("u5", "9", "NA", "", "", "2010-01-01"), ("u1", "2", 3, "剧情|NA||爱情", "", "2010-01-05")]
    yield {"interactions": str(write_dump(tmp_path / "rated", movie_rows=rows))}
    books = [("\u3000u1", "1\u00a0", 5, "\u3000科幻\u3000|经典\t|经典", "", "2010-01-05"), *review_rows("book")[1:],
             ("u3", "1", 4, "经典 | 科幻", "", "2010-1-9"), ("u2", "1", 4, "科幻", "", "2010-01-09 10:30")]
    yield {"interactions": str(write_dump(tmp_path / "spaces", book_rows=books))}


@pytest.mark.parametrize("options", [{}, {"douban_min_rating": 4}, {"min_user": 3, "min_item": 2}, {"time_min": "2010-01-03"},
                                     {"max_history": 2, "repeats": "keep_last"}], ids=lambda o: ",".join(o) or "defaults")
def test_douban_fixtures_give_the_python_path_dataset(tmp_path, options):
    for dump in douban_dumps(tmp_path):
        check({"format": "douban", **dump, **options})


def test_a_bad_douban_row_is_one_error_naming_the_file_and_line(tmp_path):
    rows = review_rows("book")
    rows[4] = ("u3", "3", 5, "科幻", "x", "2010-13-03")
    bad_date = write_dump(tmp_path / "date", book_rows=rows)
    broken = '"u9"\t"1"\t5\t"小说"\t"he said \\"hi\tthere\\" ok"\t"2010-01-08"\t6\n'
    bad_width = write_dump(tmp_path / "width", extra_lines=broken)
    for folder, error in ((bad_date, r"bookreviews_cleaned.txt:7: 'time' is not a date like 2010-01-31: '2010-13-03'"),
                          (bad_width, r"bookreviews_cleaned.txt:8: 8 fields where the header has 7")):
        cfg = {**default_data_config(), "format": "douban", "interactions": str(folder)}
        assert columnar.prepare_dump(cfg, resolve_inputs(cfg), progress=False) is None
        ws = load_config([], [f"workspace={tmp_path / 'ws'}", "data.engine=duckdb", "data.format=douban",
                              f"data.interactions={folder}"])
        with pytest.raises(DataError, match=error):
            run_prepare(ws, progress=False)
