"""RecBole atomic files: import of both layouts, export, and the round trip."""
import numpy as np
import pandas as pd
import pytest

from llm4cdsr.data.errors import DataError
from llm4cdsr.data.prepare import build_dataset
from llm4cdsr.data.recbole import export_recbole, read_atomic, read_recbole


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_joint_layout(tmp_path):
    inter = write(tmp_path / "x.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\tdomain:token\n"
                  "u1\ti1\t5\t3\tbook\nu1\ti2\t4\t1\tbook\nu1\tm1\t3\t2\tmovie\nu2\tm1\t1\t1\tmovie\n")
    item = write(tmp_path / "x.item", "item_id:token\tdomain:token\ttitle:token_seq\tgenre:token_seq\n"
                 "i1\tbook\tThe \"Long\" Way\tsf\ni2\tbook\tShort\tdrama\nm1\tmovie\tFilm\tsf drama\n")
    ds = build_dataset(read_recbole(inter, item))
    assert ds.domains == ("book", "movie") and ds.user_ids.tolist() == ["u1"]
    assert ds.sequence(0).tolist() == [2, 3, 1]
    assert ds.items["title"].tolist() == ['The "Long" Way', "Short", "Film"]
    assert ds.items["genre"].tolist() == ["sf", "drama", "sf drama"]
    assert "rating" not in ds.items.columns


def test_per_domain_layout_without_item_files_or_timestamps(tmp_path):
    a = write(tmp_path / "books.inter", "user_id:token\titem_id:token\nu1\tb1\nu1\tb2\nu2\tb1\n")
    b = write(tmp_path / "films.inter", "user_id:token\titem_id:token\nu1\tf1\nu2\tf2\nu2\tf1\n")
    ds = build_dataset(read_recbole([a, b]))
    assert ds.domains == ("books", "films") and ds.meta["time_kind"] == "position"
    # Without timestamps the file order is the history order: all of books.inter, then films.inter.
    assert ds.sequence(0).tolist() == [1, 2, 3] and ds.sequence(1).tolist() == [1, 4, 3]
    assert (ds.items["title"] == "").all()


def test_bad_header_and_bad_timestamp(tmp_path):
    bad = write(tmp_path / "bad.inter", "user_id\titem_id:token\n")
    with pytest.raises(DataError, match=r"bad.inter: line 1: header field 'user_id' is not 'name:type'"):
        read_atomic(bad)
    bad = write(tmp_path / "t.inter", "user_id:token\titem_id:token\ttimestamp:float\tdomain:token\nu1\ti1\t1\ta\nu1\ti2\tx\tb\n")
    with pytest.raises(DataError, match=r"t.inter: line 3: 'timestamp' is not a number"):
        read_recbole(bad)
    with pytest.raises(DataError, match="no 'domain:token' field"):
        read_recbole(write(tmp_path / "n.inter", "user_id:token\titem_id:token\nu1\ti1\n"))


def test_export_then_import_gives_the_same_dataset(tmp_path, synth_ds):
    paths = export_recbole(synth_ds, tmp_path / "rb", name="syn")
    assert (tmp_path / "rb" / "syn_books" / "syn_books.inter") in paths
    assert (tmp_path / "rb" / "synth.json").is_file()  # still marked synthetic
    header = (tmp_path / "rb" / "syn.inter").read_text().splitlines()[0]
    assert header == "user_id:token\titem_id:token\ttimestamp:float\tdomain:token"
    joint = build_dataset(read_recbole(tmp_path / "rb" / "syn.inter", tmp_path / "rb" / "syn.item"),
                          {"domains": list(synth_ds.domains)})
    per_domain = build_dataset(
        read_recbole([tmp_path / "rb" / f"syn_{d}" / f"syn_{d}.inter" for d in synth_ds.domains],
                     [tmp_path / "rb" / f"syn_{d}" / f"syn_{d}.item" for d in synth_ds.domains]),
        {"domain_map": {f"syn_{d}": d for d in synth_ds.domains}, "domains": list(synth_ds.domains)})
    for back in (joint, per_domain):
        assert back.domains == synth_ds.domains
        assert (back.user_ids == synth_ds.user_ids).all()
        np.testing.assert_array_equal(back.seq_offsets, synth_ds.seq_offsets)
        np.testing.assert_array_equal(back.seq_items, synth_ds.seq_items)
        np.testing.assert_array_equal(back.seq_times, synth_ds.seq_times)
        pd.testing.assert_frame_equal(back.items, synth_ds.items)
