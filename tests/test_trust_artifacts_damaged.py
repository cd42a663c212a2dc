"""A truncated or corrupt artifact (a kill or a full disk during its write, a bad copy) is one line
naming the file and what rebuilds it; `prepare` and `run` rebuild a damaged dataset as a missing one."""
from __future__ import annotations

from pathlib import Path

import pytest
from openai_stub import OpenAIStub, stub_overrides

from llm4cdsr.cli import main
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.data.synth import synth_dataset
from llm4cdsr.io import file_damage
from llm4cdsr.workspace import Workspace

POP = ["model.name=pop", "eval.num_negatives=20", "train.progress=false", "train.num_threads=1"]


def _error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(f"llm4cdsr {command}: error: "), err[-2000:]
    return last


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["seq_items.npy", "items.parquet", "meta.json", "users.parquet"])
def test_run_prepares_a_damaged_dataset_again(tmp_path, capsys, name):
    ws = tmp_path / "ws"
    args = ["run", "-w", str(ws), "data.synth.users=80", *POP, "run.stages=[prepare]"]
    assert main(args) == 0
    good = (ws / "dataset" / name).read_bytes()
    _truncate(ws / "dataset" / name)
    assert main(args) == 0
    assert (ws / "dataset" / name).read_bytes() == good  # prepared again, the same bytes
    PreparedDataset.load(ws / "dataset")


def test_file_damage_sees_truncation_of_every_format(tmp_path, synth_ds):
    folder = tmp_path / "dataset"
    synth_ds.save(folder)
    for path in sorted(folder.iterdir()):
        assert file_damage(path) is None, path
        _truncate(path)
        assert file_damage(path) is not None, path


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dim=16) as s:
        yield s


TRAIN = ["model.name=llm4cdsr", "model.hidden=8", "model.heads=1", "model.max_len=10", "train.progress=false",
         "eval.num_negatives=4", "train.epochs=1", "train.num_threads=1", "embed.global_dim=8", "model.beta=0"]


@pytest.mark.parametrize("name", ["pca.safetensors", "items.npy", "meta.json"])
def test_train_on_damaged_embeddings_is_one_line(tmp_path, stub, capsys, name):
    ws = tmp_path / "ws"
    synth_dataset(n_users=100, n_items=(80, 100), seed=0).save(Workspace(ws).dataset_dir)
    args = ["-w", str(ws), *stub_overrides(stub, chat=False), *TRAIN]
    assert main(["embed", *args]) == 0
    _truncate(ws / "embeddings" / name)
    capsys.readouterr()
    assert main(["train", *args]) == 2
    line = _error(capsys, "train")
    assert f"{ws / 'embeddings' / name}: damaged or truncated" in line and "llm4cdsr embed --force" in line, line


@pytest.mark.parametrize("name", ["model.safetensors", "dataset_info.json", "config.yaml"])
def test_evaluate_a_run_with_a_damaged_file_is_one_line(tmp_path, synth_ds, capsys, name):
    ws = tmp_path / "ws"
    synth_ds.save(Workspace(ws).dataset_dir)
    assert main(["train", "-w", str(ws), *POP, "--run-name", "pop"]) == 0
    run_dir = ws / "runs" / "pop"
    if name == "config.yaml":
        (run_dir / name).write_text("model: [name: pop\n")
    else:
        _truncate(run_dir / name)
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 2
    line = _error(capsys, "evaluate")
    assert str(run_dir / name) in line, line


class Interrupted(KeyboardInterrupt):
    pass


def test_resume_from_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, synth_ds, capsys, monkeypatch):
    from llm4cdsr.training import trainer as trainer_module

    ws = tmp_path / "ws"
    synth_ds.save(Workspace(ws).dataset_dir)
    args = ["train", "-w", str(ws), "model.name=sasrec_mixed", "model.hidden=16", "model.max_len=20", "train.epochs=2",
            "train.progress=false", "eval.num_negatives=20", "train.num_threads=1", "--run-name", "r"]

    def ctrl_c_after_first_epoch(self, epoch):
        raise Interrupted()

    monkeypatch.setattr(trainer_module.Trainer, "after_epoch", ctrl_c_after_first_epoch)
    assert main(args) == 130
    monkeypatch.undo()
    _truncate(ws / "runs" / "r" / "checkpoint.pt")
    capsys.readouterr()
    assert main(args) == 2
    line = _error(capsys, "train")
    assert f"{ws / 'runs' / 'r' / 'checkpoint.pt'}: damaged or truncated" in line and "cannot resume" in line, line


@pytest.mark.parametrize("command", ["train", "recommend", "export"])
def test_a_damaged_dataset_table_read_directly_is_one_line(tmp_path, capsys, command):
    # These load the dataset without prepare's damage check: pyarrow's message (a traceback from the
    # console script) said neither that the file is damaged nor what rebuilds it.
    ws = tmp_path / "ws"
    assert main(["run", "-w", str(ws), "data.synth.users=80", *POP, "run.stages=[prepare,train]", "run.name=pop"]) == 0
    capsys.readouterr()
    (ws / "dataset" / "users.parquet").write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")  # the magic, nothing readable
    argv = {"train": ["train", "-w", str(ws), *POP, "--run-name", "again"],
            "recommend": ["recommend", "--run", str(ws / "runs" / "pop"), "--user", "u00001"],
            "export": ["export", "-w", str(ws), "--format", "recbole", "--out", str(tmp_path / "rb")]}[command]
    assert main(argv) != 0
    line = _error(capsys, command)
    # (the tmp folder's name holds "damaged" too: the phrase and the way out are what count)
    assert "users.parquet: damaged or truncated" in line and "llm4cdsr prepare --force" in line
