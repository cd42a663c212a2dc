"""Bad input data stops `prepare` with one line naming the file (and line); ids are bounded keys
held as Python strings (no fixed-width arrays); a killed prepare leaves nothing behind for long."""
from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm4cdsr.cli import main
from llm4cdsr.config import load_config
from llm4cdsr.data.amazon import read_amazon
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.prepare import prepare_tables, run_prepare
from llm4cdsr.data.raw import MAX_ID_CHARS
from llm4cdsr.io import remove_stale_partials

ITEMS = pd.DataFrame({"item_id": ["a1", "a2", "b1", "b2"], "domain": ["food", "food", "kitchen", "kitchen"],
                      "title": ["apple", "bread", "pan", "pot"]})


def interactions(users: list[str]) -> pd.DataFrame:
    rows = [(u, item, dom, t) for u in users for t, (item, dom) in enumerate([("a1", "food"), ("b1", "kitchen"), ("a2", "food")])]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "domain", "timestamp"])


def prepare_cli(tmp_path, inter_text: str, items_text: str | None = None, capsys=None) -> tuple[int, str]:
    ip, tp = tmp_path / "inter.csv", tmp_path / "items.csv"
    ip.write_text(inter_text)
    tp.write_text(items_text if items_text is not None else ITEMS.to_csv(index=False))
    code = main(["prepare", "--interactions", str(ip), "--items", str(tp), "--out", str(tmp_path / "ws"), "--no-progress"])
    return code, capsys.readouterr().err.strip()


def test_an_id_longer_than_the_bound_is_an_error_naming_the_line(tmp_path, capsys):
    frame = interactions(["u1", "u2", "u" * (MAX_ID_CHARS + 1)])
    code, err = prepare_cli(tmp_path, frame.to_csv(index=False), capsys=capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "inter.csv: line 8" in err and f"longer than {MAX_ID_CHARS} characters" in err
    assert not (tmp_path / "ws" / "dataset").exists()


def test_a_long_id_in_an_amazon_dump_names_the_line(tmp_path):
    def dump(path, records):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    rec = {"reviewerID": "U1", "asin": "F1", "unixReviewTime": 1}
    food = dump(tmp_path / "Grocery_and_Gourmet_Food.json", [rec, dict(rec, reviewerID="x" * 100_000)])
    kitchen = dump(tmp_path / "Home_and_Kitchen.json", [dict(rec, asin="K1")])
    with pytest.raises(DataError, match=rf"Grocery_and_Gourmet_Food.json:2: 'reviewerID' is longer than {MAX_ID_CHARS}"):
        read_amazon([food, kitchen], [], "2018", progress=False)


def test_ids_are_never_fixed_width_arrays(tmp_path):
    """One id at the bound among 30,000 users: fixed-width unicode would make each array of ids
    30,000 x 256 x 4 bytes (31 MB); Python strings in object arrays need a fraction."""
    users = [f"u{i:06d}" for i in range(30_000 - 1)] + ["z" * MAX_ID_CHARS]
    frame = interactions(users)
    tracemalloc.start()
    try:
        ds = prepare_tables(frame, ITEMS, {"domains": ["food", "kitchen"]})
        ds.save(tmp_path / "dataset")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.n_users == 30_000 and ds.user_ids[-1] == "z" * MAX_ID_CHARS and ds.user_ids.dtype == object
    assert peak < 25 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_repeated_column_names_are_an_error_naming_the_file(tmp_path, capsys):
    text = "user_id,item_id,domain,timestamp,timestamp\nu1,a1,food,1,2\n"
    code, err = prepare_cli(tmp_path, text, capsys=capsys)
    assert code == 2 and "inter.csv" in err and "'timestamp' appear more than once" in err
    frame = interactions(["u1", "u2"])
    parquet = tmp_path / "inter.parquet"  # pandas will not write one; pyarrow will
    pq.write_table(pa.Table.from_arrays([pa.array(frame[c].astype(str)) for c in frame.columns],
                                        names=["user_id", "item_id", "domain", "user_id"]), parquet)
    code = main(["prepare", "--interactions", str(parquet), "--items", str(tmp_path / "items.csv"), "--out", str(tmp_path / "ws")])
    assert code == 2 and "inter.parquet" in capsys.readouterr().err


@pytest.mark.parametrize("marker", ["NaN", "nan", "NULL", "None", "N/A"])
def test_a_missing_value_marker_is_no_id(tmp_path, capsys, marker):
    frame = interactions(["u1", "u2", marker])
    code, err = prepare_cli(tmp_path, frame.to_csv(index=False), capsys=capsys)
    assert code == 2 and "inter.csv: line 8" in err and f"'user_id' is {marker!r}" in err


def test_an_empty_csv_is_a_one_line_error(tmp_path, capsys):
    code, err = prepare_cli(tmp_path, "", capsys=capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "inter.csv: empty file" in err
    code, err = prepare_cli(tmp_path, interactions(["u1", "u2"]).to_csv(index=False), items_text="", capsys=capsys)
    assert code == 2 and "items.csv: empty file" in err


def test_folders_of_a_killed_prepare_are_removed_by_the_next_one(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: its folders are garbage
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        left = [ws / f".dataset.partial-{dead_pid}-abc123", ws / ".dataset.partial-k2j4l9x_", ws / f".dataset.old-{dead_pid}"]
        busy = ws / f".dataset.partial-{alive.pid}-def456"  # another writer's, still running
        for folder in [*left, busy]:
            folder.mkdir()
            (folder / "items.parquet").write_bytes(b"half")
        cfg = load_config([], [f"workspace={ws}", "data.synth.users=60", "data.synth.items_a=20", "data.synth.items_b=30"])
        run_prepare(cfg)
        assert not any(p.exists() for p in left) and busy.exists()
        assert (ws / "dataset" / "meta.json").is_file()
    finally:
        alive.communicate(b"")
    assert remove_stale_partials(ws / "dataset") == [busy]  # gone now


def test_user_ids_keep_their_order_and_text(synth_ds):
    assert list(synth_ds.user_ids) == sorted(synth_ds.user_ids)
    assert isinstance(synth_ds.user_ids[0], str) and synth_ds.user_ids.dtype == np.dtype(object)
