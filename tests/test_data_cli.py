"""The synth, prepare and export commands, run in-process."""
import json

from llm4cdsr.cli import main


def test_synth_prepare_export(tmp_path, capsys):
    world = tmp_path / "world"
    assert main(["synth", "--out", str(world), "--users", "60", "--items-a", "30", "--items-b", "40", "--seed", "1"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    ws = tmp_path / "ws"
    assert main(["prepare", "--interactions", str(world / "interactions.csv"), "--items", str(world / "items.csv"),
                 "--out", str(ws), "--max-history", "8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "users          60" in out and "SYNTHETIC" in out and "most recent 8" in out
    stats = json.loads((ws / "dataset" / "stats.json").read_text())
    assert stats["synthetic"] is True and stats["history_length"]["max"] == 8
    meta = json.loads((ws / "dataset" / "meta.json").read_text())
    assert meta["data_config"]["max_history"] == 8 and len(meta["config_hash"]) == 16

    assert main(["prepare", "--interactions", str(world / "interactions.csv"), "--items", str(world / "items.csv"),
                 "--out", str(ws), "--max-history", "8"]) == 0
    assert "dataset is current" in capsys.readouterr().out

    assert main(["export", "--format", "recbole", "-w", str(ws), "--out", str(tmp_path / "rb")]) == 0
    assert (tmp_path / "rb" / "cdsr.inter").is_file()


def test_config_route_and_overrides(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"workspace: {tmp_path / 'ws'}\ndata:\n  synth:\n    users: 40\n    items_a: 20\n    items_b: 30\n")
    assert main(["prepare", "-c", str(config), "data.min_user=6"]) == 0
    out = capsys.readouterr().out
    assert "(synthetic," in out and "k-core users>=6" in out


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    inter = tmp_path / "i.csv"
    inter.write_text("user_id,item_id,domain,timestamp\nu1,a,x,1\nu1,b,y,later\n")
    items = tmp_path / "t.csv"
    items.write_text("item_id,domain,title\na,x,A\nb,y,B\n")
    assert main(["prepare", "--interactions", str(inter), "--items", str(items), "--out", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert "llm4cdsr prepare: error:" in err and "i.csv: line 3: 'timestamp' is not a number" in err
    assert "Traceback" not in err
    assert not (tmp_path / "ws" / "dataset").exists()
    assert main(["prepare", "--items", str(items), "--out", str(tmp_path / "ws")]) == 2
    assert "data.items is set but data.interactions is not" in capsys.readouterr().err
