"""Generic table import and the prepare pipeline: ids, order, filters, errors, staleness, atomicity."""
import json

import pandas as pd
import pytest

from llm4cdsr.config import load_config
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.prepare import build_dataset, dataset_stats, is_current, prepare_tables, run_prepare
from llm4cdsr.data.raw import read_tables

ITEMS = pd.DataFrame({
    "item_id": ["a1", "a2", "a3", "b1", "b2", "b3"],
    "domain": ["food", "food", "food", "kitchen", "kitchen", "kitchen"],
    "title": ["apple", "bread", "", "pan", "pot", "knife"],
    "brand": ["x", "", "y", "z", "", ""],
})


def inter(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "domain", "timestamp"])


def write(tmp_path, interactions, items=ITEMS, kind="csv"):
    ip, tp = tmp_path / f"inter.{kind}", tmp_path / f"items.{kind}"
    if kind == "csv":
        interactions.to_csv(ip, index=False)
        items.to_csv(tp, index=False)
    else:
        interactions.to_parquet(ip, index=False)
        items.to_parquet(tp, index=False)
    return ip, tp


def cfg_for(tmp_path, ip, tp, **data):
    cfg = load_config([], [f"workspace={tmp_path / 'ws'}"])
    cfg["data"].update(interactions=str(ip), items=str(tp), **data)
    return cfg


BASIC = inter([
    ("u2", "b1", "kitchen", 30), ("u1", "a1", "food", 10), ("u1", "b2", "kitchen", 20),
    ("u2", "a2", "food", 10), ("u1", "a3", "food", 30), ("u2", "b3", "kitchen", 20),
    ("u3", "a1", "food", 5), ("u3", "a2", "food", 6),  # only two interactions: dropped
])


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_ids_order_and_stats(tmp_path, kind):
    ip, tp = write(tmp_path, BASIC, kind=kind)
    ds = build_dataset(read_tables(ip, tp))
    assert ds.domains == ("food", "kitchen") and ds.n_items == (3, 3)
    assert list(ds.user_ids) == ["u1", "u2"]  # u3 dropped: fewer than 3 interactions
    assert list(ds.items["raw_id"]) == ["a1", "a2", "a3", "b1", "b2", "b3"]
    assert list(ds.items["local_id"]) == [1, 2, 3, 1, 2, 3]
    assert list(ds.items["brand"]) == ["x", "", "y", "z", "", ""]
    assert ds.sequence(0).tolist() == [1, 5, 3]  # a1 (10), b2 (20), a3 (30)
    assert ds.sequence(1).tolist() == [2, 6, 4]
    assert ds.seq_times.tolist() == [10, 20, 30, 10, 20, 30]
    stats = dataset_stats(ds)
    assert stats["users"] == 2 and stats["overlap_users"] == 2 and stats["empty_titles"] == 1
    assert stats["interactions"] == {"food": 3, "kitchen": 3}


def test_equal_timestamps_keep_input_row_order(tmp_path):
    rows = inter([("u1", "b2", "kitchen", 5), ("u1", "a1", "food", 5), ("u1", "a3", "food", 5), ("u1", "a2", "food", 1)])
    ds = build_dataset(read_tables(*write(tmp_path, rows)))
    assert ds.sequence(0).tolist() == [2, 4, 1, 3]  # a2, then b2, a1, a3 as written (b1, b3 unused: dropped)


def test_position_column_and_renamed_columns(tmp_path):
    rows = pd.DataFrame({"uid": ["u1"] * 3, "iid": ["b1", "a1", "a2"], "dom": ["kitchen", "food", "food"], "pos": [2, 0, 1]})
    items = ITEMS.rename(columns={"item_id": "iid", "domain": "dom", "title": "name"})
    ip, tp = write(tmp_path, rows, items)
    cols = {"user": "uid", "item": "iid", "domain": "dom", "position": "pos", "title": "name"}
    ds = build_dataset(read_tables(ip, tp, cols))
    assert ds.sequence(0).tolist() == [1, 2, 3] and ds.meta["time_kind"] == "position"
    with pytest.raises(DataError, match="time window"):
        build_dataset(read_tables(ip, tp, cols), {"time_min": 1})


def test_filters_domain_order_and_map(tmp_path):
    # ids: a1 1, a2 2, a3 3, b1 4, b2 5 (b3 has no interaction and is dropped)
    rows = inter([("u1", "a1", "food", 1), ("u1", "b1", "kitchen", 2), ("u1", "a1", "food", 3), ("u1", "a2", "food", 4),
                  ("u1", "b2", "kitchen", 5), ("u2", "a1", "food", 1), ("u2", "b1", "kitchen", 2), ("u2", "a3", "food", 3)])
    raw = read_tables(*write(tmp_path, rows))
    assert build_dataset(raw).sequence(0).tolist() == [1, 4, 1, 2, 5]
    first = build_dataset(raw, {"repeats": "keep_first"})
    assert first.sequence(0).tolist() == [1, 4, 2, 5]
    last = build_dataset(raw, {"repeats": "keep_last"})
    assert last.sequence(0).tolist() == [4, 1, 2, 5]
    recent = build_dataset(raw, {"max_history": 3})
    assert recent.sequence(0).tolist() == [1, 2, 5] and recent.sequence(1).tolist() == [1, 4, 3]
    # 2 <= t < 5 leaves u2 two interactions (dropped); ids are reassigned: a1 1, a2 2, b1 3
    window = build_dataset(raw, {"time_min": 2, "time_max": 5})
    assert window.user_ids.tolist() == ["u1"] and window.sequence(0).tolist() == [3, 1, 2]
    swapped = build_dataset(raw, {"domains": ["kitchen", "food"]})
    assert swapped.domains == ("kitchen", "food") and swapped.items["raw_id"].tolist()[:2] == ["b1", "b2"]
    renamed = build_dataset(raw, {"domain_map": {"food": "F", "kitchen": "K"}})
    assert renamed.domains == ("F", "K")
    with pytest.raises(DataError, match="does not name"):
        build_dataset(raw, {"domains": ["food", "garden"]})
    with pytest.raises(DataError, match="repeats must be one of"):
        build_dataset(raw, {"repeats": "keep_some"})


def test_more_than_two_domains_needs_a_map(tmp_path):
    items = pd.concat([ITEMS, pd.DataFrame({"item_id": ["c1"], "domain": ["garden"], "title": ["rake"], "brand": [""]})])
    rows = inter([("u1", "a1", "food", 1), ("u1", "b1", "kitchen", 2), ("u1", "c1", "garden", 3), ("u1", "a2", "food", 4)])
    raw = read_tables(*write(tmp_path, rows, items))
    with pytest.raises(DataError, match=r"inter.csv: 3 domain values .*domain_map"):
        build_dataset(raw)
    merged = build_dataset(raw, {"domain_map": {"garden": "kitchen"}})
    assert merged.n_items == (2, 2) and merged.lengths.tolist() == [4]
    dropped = build_dataset(raw, {"domain_map": {"garden": None}})
    assert dropped.lengths.tolist() == [3] and dropped.n_items_total == 3


def test_dates_in_time_window(tmp_path):
    day = 86400
    rows = inter([("u1", "a1", "food", 18262 * day + 5), ("u1", "b1", "kitchen", 18263 * day), ("u1", "a2", "food", 18264 * day),
                  ("u1", "b2", "kitchen", 18265 * day)])  # 18262 days after 1970 = 2020-01-01
    raw = read_tables(*write(tmp_path, rows))
    ds = build_dataset(raw, {"time_min": "2020-01-02", "time_max": "2020-01-05"})
    assert ds.sequence(0).tolist() == [2, 1, 3]  # b1, a2, b2 (ids among the items left: a2 1, b1 2, b2 3)


@pytest.mark.parametrize("case, pattern", [
    ("missing_file", r"interactions file not found: .*nope.csv"),
    ("missing_column", r"inter.csv: missing column\(s\) 'domain'"),
    ("no_time", r"inter.csv: needs a 'timestamp' or a 'position' column"),
    ("bad_time", r"inter.csv: line 3: 'timestamp' is not a number \('soon'\)"),
    ("empty_user", r"inter.csv: line 2: empty 'user_id'"),
    ("dup_cross", r"items.csv: item id\(s\) duplicated across domains: a1"),
    ("dup_same", r"items.csv: item id\(s\) listed more than once: b1"),
    ("unknown_item", r"inter.csv: 2 interaction\(s\) name an item with no row in .*items.csv: zz1, zz2 \(first at line 3\)"),
    ("domain_mismatch", r"inter.csv: line 2: domain differs from the item's domain"),
    ("one_domain", r"cover 1 domain\(s\) \(food\); two are needed"),
])
def test_bad_input_names_file_and_line(tmp_path, case, pattern):
    rows, items = BASIC.copy(), ITEMS.copy()
    if case == "missing_column":
        rows = rows.drop(columns="domain")
    elif case == "no_time":
        rows = rows.drop(columns="timestamp")
    elif case == "bad_time":
        rows["timestamp"] = rows["timestamp"].astype(str)
        rows.loc[1, "timestamp"] = "soon"
    elif case == "empty_user":
        rows.loc[0, "user_id"] = ""
    elif case == "dup_cross":
        items.loc[3, "item_id"] = "a1"
    elif case == "dup_same":
        items = pd.concat([items, items.iloc[[3]]])
    elif case == "unknown_item":
        rows.loc[1, "item_id"], rows.loc[4, "item_id"] = "zz1", "zz2"
    elif case == "domain_mismatch":
        rows.loc[0, "domain"] = "food"
    elif case == "one_domain":
        rows = rows[rows["domain"] == "food"]
    ip, tp = write(tmp_path, rows, items)
    if case == "missing_file":
        ip = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=pattern):
        build_dataset(read_tables(ip, tp))


def test_prepare_tables_from_frames_accepts_numbers():
    rows = BASIC.assign(user_id=BASIC["user_id"].str[1:].astype(int))
    ds = prepare_tables(rows, ITEMS)
    assert list(ds.user_ids) == ["1", "2"]


def test_run_prepare_skips_when_current_and_redoes_on_change(tmp_path):
    ip, tp = write(tmp_path, BASIC)
    cfg = cfg_for(tmp_path, ip, tp)
    assert not is_current(cfg)
    ds = run_prepare(cfg)
    folder = tmp_path / "ws" / "dataset"
    assert is_current(cfg) and json.loads((folder / "stats.json").read_text())["users"] == 2
    stamp = (folder / "meta.json").stat().st_mtime_ns
    assert run_prepare(cfg).n_users == ds.n_users and (folder / "meta.json").stat().st_mtime_ns == stamp
    cfg["data"]["max_history"] = 2  # an option change makes it stale
    assert not is_current(cfg)
    cfg["data"]["max_history"] = 0
    assert is_current(cfg)
    BASIC.iloc[:-2].to_csv(ip, index=False)  # so does an input change (size / mtime)
    assert not is_current(cfg)
    run_prepare(cfg)
    assert is_current(cfg) and PreparedDataset.load(folder).n_users == 2


def test_interrupted_prepare_leaves_no_dataset_a_later_stage_accepts(tmp_path, monkeypatch):
    ip, tp = write(tmp_path, BASIC)
    cfg = cfg_for(tmp_path, ip, tp)
    folder = tmp_path / "ws" / "dataset"

    import llm4cdsr.data.dataset as dataset_module

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_module, "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(cfg)
    assert not folder.exists() and not is_current(cfg)
    # no partial folder left behind: a first prepare that fails leaves no workspace holding only its lock file
    assert not (tmp_path / "ws").exists()
    monkeypatch.undo()

    run_prepare(cfg)  # a good dataset, then a failing re-prepare with other options
    cfg["data"]["max_history"] = 3
    monkeypatch.setattr(dataset_module, "save_npy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(cfg)
    monkeypatch.undo()
    assert not is_current(cfg)  # the old dataset survives intact but is known to be stale
    cfg["data"]["max_history"] = 0
    assert is_current(cfg) and PreparedDataset.load(folder).n_users == 2


def test_synth_marker_and_builtin_default(tmp_path):
    from llm4cdsr.data.synth import write_world

    world = write_world(tmp_path / "world", n_users=40, n_items=(20, 30), seed=2)
    cfg = load_config([], [f"workspace={tmp_path / 'ws'}"])
    cfg["data"]["interactions"] = str(world)  # a folder: finds interactions.csv and items.csv
    ds = run_prepare(cfg, progress=False)
    assert ds.meta["synthetic"] is True and ds.meta["source"]["format"] == "table"
    assert json.loads((tmp_path / "ws" / "dataset" / "stats.json").read_text())["synthetic"] is True

    builtin = load_config([], [f"workspace={tmp_path / 'ws2'}", "data.synth.users=50", "data.synth.items_a=20", "data.synth.items_b=30"])
    ds = run_prepare(builtin)
    assert ds.meta["synthetic"] is True and ds.n_users == 50 and ds.meta["source"]["format"] == "synthetic"


def test_format_and_files_must_agree(tmp_path):
    from llm4cdsr.data.prepare import resolve_inputs

    ip, tp = write(tmp_path, BASIC)
    data = load_config()["data"]
    with pytest.raises(DataError, match="format is synthetic but input files are named"):
        resolve_inputs({**data, "format": "synthetic", "interactions": str(ip)})
    with pytest.raises(DataError, match="needs one items file"):
        resolve_inputs({**data, "interactions": str(ip)})
    with pytest.raises(DataError, match="data.format must be one of"):
        resolve_inputs({**data, "format": "csv"})
    assert resolve_inputs({**data, "interactions": str(ip), "items": str(tp)})["format"] == "table"
