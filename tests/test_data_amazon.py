"""Amazon review dumps (2018 json.gz, 2023 jsonl[.gz]) written here in their real line formats."""
import gzip
import json

import pytest

from llm4cdsr.data.amazon import detect_version, domain_name, read_amazon
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.prepare import build_dataset

# (user, item, time in seconds)
FOOD = [("U1", "F1", 100), ("U1", "F2", 300), ("U2", "F1", 50), ("U2", "F3", 60), ("U3", "F2", 10)]
KITCHEN = [("U1", "K1", 200), ("U2", "K1", 70), ("U3", "K2", 20), ("U3", "K3", 30), ("U4", "K1", 1)]


def write_lines(path, records, raw_lines=()):
    text = "".join(json.dumps(r) + "\n" for r in records) + "".join(raw_lines)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def dumps_2018(tmp_path, bad_line=None):
    def review(u, i, t):
        return {"overall": 5.0, "verified": True, "reviewTime": "01 1, 2015", "reviewerID": u, "asin": i,
                "reviewerName": "x", "reviewText": "good", "summary": "ok", "unixReviewTime": t}

    food = write_lines(tmp_path / "Grocery_and_Gourmet_Food_5.json.gz", [review(*r) for r in FOOD],
                       [bad_line] if bad_line else [])
    kitchen = write_lines(tmp_path / "Home_and_Kitchen_5.json.gz", [review(*r) for r in KITCHEN])
    meta_food = write_lines(tmp_path / "meta_Grocery_and_Gourmet_Food.json.gz", [
        {"asin": "F1", "title": "Green Tea", "brand": "Leafy", "price": "$4.99",
         "category": ["Grocery & Gourmet Food", "Beverages", "Tea"], "description": ["Fine", "tea."], "feature": []},
        {"asin": "F2", "title": "Oat Bar", "brand": "", "category": []},
        {"asin": "F1", "title": "Duplicate row: the first one wins"},
        {"asin": "X9", "title": "Never reviewed: not kept"},
    ])
    meta_kitchen = write_lines(tmp_path / "meta_Home_and_Kitchen.json.gz", [
        {"asin": "K1", "title": "Frying Pan", "brand": "Iron", "price": "$20", "category": ["Home & Kitchen", "Cookware"]},
        {"asin": "K2", "title": "Knife\nSet", "description": "Sharp   knives"},
        {"asin": "K3", "title": "Kettle"},
    ])
    return [food, kitchen], [meta_food, meta_kitchen]


def dumps_2023(tmp_path, gz):
    ext = ".jsonl.gz" if gz else ".jsonl"

    def review(u, i, t):
        return {"rating": 5.0, "title": "t", "text": "x", "images": [], "asin": i + "-child", "parent_asin": i,
                "user_id": u, "timestamp": t * 1000, "helpful_vote": 0, "verified_purchase": True}

    food = write_lines(tmp_path / f"Grocery_and_Gourmet_Food{ext}", [review(*r) for r in FOOD])
    kitchen = write_lines(tmp_path / f"Home_and_Kitchen{ext}", [review(*r) for r in KITCHEN])
    meta = write_lines(tmp_path / f"meta_All{ext}", [
        {"main_category": "Grocery", "title": "Green Tea", "features": ["organic"], "description": ["Fine tea."],
         "price": 4.99, "images": [], "store": "Leafy", "categories": ["Grocery", "Tea"], "details": {}, "parent_asin": "F1"},
        {"title": "Frying Pan", "price": None, "store": "Iron", "categories": [], "parent_asin": "K1"},
        {"title": "Kettle", "parent_asin": "K3"},
    ])
    return [food, kitchen], [meta]


def test_domain_name_from_file_names():
    assert domain_name("reviews_Grocery_and_Gourmet_Food_5.json.gz") == "Grocery_and_Gourmet_Food"
    assert domain_name("/x/meta_Home_and_Kitchen.jsonl") == "Home_and_Kitchen"
    assert domain_name("Books.jsonl.gz") == "Books"


def test_2018_import(tmp_path):
    reviews, meta = dumps_2018(tmp_path)
    assert detect_version(reviews[0]) == "2018"
    raw = read_amazon(reviews, meta, progress=False)
    assert raw.time_unit == "s" and raw.notes["items_without_metadata"] == 1  # F3
    assert set(raw.items["item_id"]) == {"F1", "F2", "F3", "K1", "K2", "K3"}  # X9 not kept
    ds = build_dataset(raw, {"domain_map": {"Grocery_and_Gourmet_Food": "food", "Home_and_Kitchen": "kitchen"}})
    assert ds.domains == ("food", "kitchen") and ds.n_items == (3, 3)
    assert list(ds.user_ids) == ["U1", "U2", "U3"]  # U4 has one review
    by_id = ds.items.set_index("raw_id")
    assert by_id.loc["F1", "title"] == "Green Tea" and by_id.loc["F1", "price"] == "$4.99"
    assert by_id.loc["F1", "categories"] == "Grocery & Gourmet Food > Beverages > Tea"
    assert by_id.loc["F1", "description"] == "Fine tea."
    assert by_id.loc["K2", "title"] == "Knife Set" and by_id.loc["K2", "description"] == "Sharp knives"
    assert by_id.loc["F3", "title"] == ""
    lookup = ds.item_lookup()
    assert ds.sequence(0).tolist() == [lookup[i] for i in ("F1", "K1", "F2")]  # U1 at 100, 200, 300
    assert ds.sequence(1).tolist() == [lookup[i] for i in ("F1", "F3", "K1")]
    assert ds.seq_times[:3].tolist() == [100, 200, 300]


@pytest.mark.parametrize("gz", [True, False])
def test_2023_import(tmp_path, gz):
    reviews, meta = dumps_2023(tmp_path, gz)
    assert detect_version(reviews[1]) == "2023"
    raw = read_amazon(reviews, meta, progress=False)
    assert raw.time_unit == "ms" and raw.source["format"] == "amazon2023"
    ds = build_dataset(raw)
    by_id = ds.items.set_index("raw_id")
    assert by_id.loc["F1", "brand"] == "Leafy" and by_id.loc["F1", "price"] == "4.99"
    assert by_id.loc["F1", "features"] == "organic" and by_id.loc["K1", "price"] == ""
    assert ds.seq_times[:3].tolist() == [100_000, 200_000, 300_000]
    window = build_dataset(raw, {"time_min": 60_000})  # milliseconds, as the data
    assert window.user_ids.tolist() == ["U1"]


def test_malformed_line_names_file_and_line(tmp_path):
    reviews, meta = dumps_2018(tmp_path, bad_line='{"reviewerID": "U9", "asin": \n')
    with pytest.raises(DataError, match=r"Grocery_and_Gourmet_Food_5.json.gz:6: malformed JSON .*--skip-bad-lines"):
        read_amazon(reviews, meta, progress=False)
    raw = read_amazon(reviews, meta, skip_bad_lines=True, progress=False)
    assert list(raw.notes["bad_lines_skipped"].values()) == [1]
    assert raw.n_interactions == len(FOOD) + len(KITCHEN)


def test_missing_field_and_bad_time(tmp_path):
    reviews, meta = dumps_2018(tmp_path, bad_line=json.dumps({"reviewerID": "U9", "unixReviewTime": 5}) + "\n")
    with pytest.raises(DataError, match=r"_5.json.gz:6: missing field 'asin'"):
        read_amazon(reviews, meta, progress=False)
    reviews, meta = dumps_2018(tmp_path, bad_line=json.dumps({"reviewerID": "U9", "asin": "F1", "unixReviewTime": "soon"}) + "\n")
    with pytest.raises(DataError, match=r"_5.json.gz:6: 'unixReviewTime' is not a number"):
        read_amazon(reviews, meta, progress=False)


def test_item_in_both_domains_is_an_error(tmp_path):
    reviews, meta = dumps_2018(tmp_path)
    write_lines(reviews[1], [{"reviewerID": "U1", "asin": "F1", "unixReviewTime": 5}])
    with pytest.raises(DataError, match="duplicated across domains: F1"):
        read_amazon(reviews, meta, progress=False)


def test_unknown_format_and_missing_file(tmp_path):
    odd = write_lines(tmp_path / "odd.jsonl", [{"who": 1}])
    with pytest.raises(DataError, match=r"odd.jsonl:1: neither the 2018"):
        detect_version(odd)
    with pytest.raises(DataError, match="reviews file not found"):
        read_amazon([tmp_path / "a.json.gz", tmp_path / "b.json.gz"], [], progress=False)


def test_prepare_command_detects_amazon(tmp_path, capsys):
    from llm4cdsr.cli import main

    reviews, meta = dumps_2018(tmp_path, bad_line="not json\n")
    args = ["prepare", "--reviews", *map(str, reviews), "--meta", *map(str, meta), "--out", str(tmp_path / "ws"),
            "--domain-map", "Grocery_and_Gourmet_Food=food", "--domain-map", "Home_and_Kitchen=kitchen", "--no-progress"]
    assert main(args) == 2
    assert "_5.json.gz:6: malformed JSON" in capsys.readouterr().err
    assert main([*args, "--skip-bad-lines"]) == 0
    out = capsys.readouterr().out
    assert "(amazon2018," in out and "bad lines skipped" in out and "items without metadata: 1" in out
    assert "food 3 + kitchen 3" in out
