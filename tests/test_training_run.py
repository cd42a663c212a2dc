"""train_run end to end on the synthetic world: every model, learning, resume, DDP, the commands."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from llm4cdsr.config import dump_config, load_config
from llm4cdsr.data.synth import synth_dataset
from llm4cdsr.llm.pca import pca_tables
from llm4cdsr.training import trainer as trainer_module
from llm4cdsr.training.run import CHECKPOINT, RunError, load_run, resumes_as_is, train_run

torch.set_num_threads(1)
HIDDEN = 16


def text_vectors(ds, seed=0):
    """Stand-ins for LLM item vectors: title bag-of-words plus a little item-specific noise, then
    the same PCA views `embed` makes. Titles share words within a taste, as LLM vectors would."""
    rng = np.random.default_rng(seed)
    titles = ds.items["title"].str.lower().str.split()
    vocab = {w: i for i, w in enumerate(sorted({w for t in titles for w in t}))}
    raw = np.zeros((ds.n_items_total + 1, len(vocab) + 8), dtype=np.float32)
    for row, words in enumerate(titles, start=1):
        for w in words:
            raw[row, vocab[w]] += 1.0
    raw[1:, len(vocab):] = rng.normal(scale=0.3, size=(ds.n_items_total, 8))
    raw[1:] /= np.linalg.norm(raw[1:], axis=1, keepdims=True)
    tables, _ = pca_tables(raw, ds.n_items, ds.domains, 24, HIDDEN, seed)
    return SimpleNamespace(raw=raw, global_pca=tables["global"], local_pca=tuple(tables[f"local.{d}"] for d in ds.domains))


def profile_vectors(ds, vectors):
    """Stand-ins for profile embeddings: the mean raw vector of each user's training items."""
    split = ds.split()
    user_of = np.repeat(np.arange(ds.n_users), split.train_lengths)
    sums = np.zeros((ds.n_users, vectors.raw.shape[1]), dtype=np.float32)
    np.add.at(sums, user_of, vectors.raw[split.train_items])
    return sums / split.train_lengths[:, None]


@pytest.fixture(scope="module")
def world():
    ds = synth_dataset(0, n_users=300)
    vectors = text_vectors(ds)
    return ds, vectors, profile_vectors(ds, vectors)


def _cfg(workspace, *overrides):
    return load_config([], [f"workspace={workspace}", f"model.hidden={HIDDEN}", "model.max_len=20", "model.dropout=0.2",
                            "train.batch_size=64", "train.progress=false", "eval.num_negatives=30", "train.epochs=1",
                            "eval.batch_size=128", *overrides])


SMOKE = [
    ("llm4cdsr",), ("sasrec_mixed",), ("sasrec_mixed_llm",), ("sasrec_single",), ("gru4rec",), ("pop",),
    ("llm4cdsr", "model.global_item=id"), ("llm4cdsr", "model.local_init=random"), ("llm4cdsr", "model.alpha=0"),
    ("llm4cdsr", "model.beta=0"), ("llm4cdsr", "model.freeze_local=false"), ("llm4cdsr", "model.causal=false"),
    ("sasrec_single", "model.single_domain=movies"), ("gru4rec", "model.gru_layers=2"),
    ("llm4cdsr", "model.freeze_local=false", "model.local_anchor=1"), ("llm4cdsr", "train.optimizer=adamw", "train.weight_decay=0.01"),
]


@pytest.mark.parametrize("spec", SMOKE, ids=["+".join(s) for s in SMOKE])
def test_one_epoch_of_every_model_and_ablation(world, tmp_path, spec):
    ds, vectors, profiles = world
    name, *switches = spec
    cfg = _cfg(tmp_path, f"model.name={name}", *switches)
    run_dir = tmp_path / "runs" / "r"
    results = train_run(cfg, run_dir, ds, item_vectors=vectors, profiles=profiles)
    domains = ["movies"] if "single_domain" in "".join(switches) else list(ds.domains)
    for mode in ("sampled", "full"):
        for block in ["overall", *domains]:
            for metric in ("hit@10", "ndcg@10", "mrr@10", "hit@5", "ndcg@20"):
                assert 0.0 <= results["test"][mode][block][metric] <= 1.0
        assert set(results["test"][mode]["groups"]) == {"domains_in_history", "history_length", "target_popularity"}
    assert results["best_epoch"] == (0 if name == "pop" else 1)
    files = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "command.txt", "train.log", "model.safetensors", "results.json", "ranks.parquet", "dataset_info.json"} <= files
    if name != "pop":
        assert {"metrics.jsonl", "checkpoint.pt"} <= files
        record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
        assert {"epoch", "train_loss", "valid", "train_s", "valid_s"} <= set(record)
        checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # no pickle needed
        assert checkpoint["state"]["epoch"] == 1
    ranks = pd.read_parquet(run_dir / "ranks.parquet")
    assert len(ranks) == results["test"]["sampled"]["overall"]["users"]
    model, saved_cfg, info = load_run(run_dir)
    assert saved_cfg["model"]["name"] == name and info["n_items"] == list(ds.n_items)
    seq = torch.tensor([[0, 0, 1, ds.n_items[0] + 2]])
    with torch.no_grad():
        assert torch.isfinite(model.score(model.user_states(seq), model.eval_domains[0])[:, 1:]).all()


def test_loss_falls_and_llm4cdsr_beats_popularity(world, tmp_path):
    ds, vectors, profiles = world
    pop = train_run(_cfg(tmp_path, "model.name=pop"), tmp_path / "runs" / "pop", ds)
    results = train_run(_cfg(tmp_path, "train.epochs=4"), tmp_path / "runs" / "llm", ds, item_vectors=vectors, profiles=profiles)
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "runs" / "llm" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]
    for mode in ("sampled", "full"):
        assert results["test"][mode]["overall"]["ndcg@10"] > pop["test"][mode]["overall"]["ndcg@10"] + 0.03


class Killed(Exception):
    pass


def test_resume_after_a_kill_ends_exactly_like_an_uninterrupted_run(world, tmp_path, monkeypatch):
    ds, vectors, profiles = world
    cfg = _cfg(tmp_path, "train.epochs=3", "model.dropout=0.3")
    straight = train_run(cfg, tmp_path / "runs" / "straight", ds, item_vectors=vectors, profiles=profiles)

    def kill_after_first_epoch(self, epoch):
        if epoch == 1:
            raise Killed()
    monkeypatch.setattr(trainer_module.Trainer, "after_epoch", kill_after_first_epoch)
    with pytest.raises(Killed):
        train_run(cfg, tmp_path / "runs" / "killed", ds, item_vectors=vectors, profiles=profiles)
    monkeypatch.undo()
    with pytest.raises(RunError, match="--resume"):
        train_run(cfg, tmp_path / "runs" / "killed", ds, item_vectors=vectors, profiles=profiles)
    resumed = train_run(cfg, tmp_path / "runs" / "killed", ds, item_vectors=vectors, profiles=profiles, resume=True)

    assert resumed["test"] == straight["test"] and resumed["valid"] == straight["valid"]
    assert resumed["best_epoch"] == straight["best_epoch"]
    lines = [[json.loads(x) for x in (tmp_path / "runs" / r / "metrics.jsonl").read_text().splitlines()] for r in ("straight", "killed")]
    assert [x["train_loss"] for x in lines[0]] == [x["train_loss"] for x in lines[1]]
    a, b = (load_file(tmp_path / "runs" / r / "model.safetensors") for r in ("straight", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a different config cannot resume the folder
    with pytest.raises(RunError, match="different config"):
        train_run(_cfg(tmp_path, "train.epochs=3", "model.dropout=0.1"), tmp_path / "runs" / "killed", ds,
                  item_vectors=vectors, profiles=profiles, resume=True)


def test_candidates_are_drawn_once_and_shared(world, tmp_path):
    ds, _, _ = world
    train_run(_cfg(tmp_path, "model.name=pop"), tmp_path / "runs" / "a", ds)
    folder = next((tmp_path / "candidates").iterdir())
    stamp = (folder / "test.npy").stat().st_mtime_ns
    train_run(_cfg(tmp_path, "model.name=pop", "seed=7"), tmp_path / "runs" / "b", ds)
    assert (folder / "test.npy").stat().st_mtime_ns == stamp
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["num_negatives"] == 30 and len(meta["dataset_fingerprint"]) == 16
    cands = np.load(folder / "test.npy")
    split = ds.split()
    assert cands.shape == (ds.n_users, 30)
    assert (np.sort(cands, 1)[:, 1:] != np.sort(cands, 1)[:, :-1]).all()  # distinct per user
    assert (ds.domain_of(cands) == ds.domain_of(split.test_target)[:, None]).all()
    for u in range(0, ds.n_users, 37):
        assert not set(cands[u]) & set(ds.sequence(u).tolist())


DDP_SCRIPT = """
import sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np
from llm4cdsr.config import load_config
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.training.run import train_run
ws = Path(sys.argv[1])
ds = PreparedDataset.load(ws / "dataset")
vectors = SimpleNamespace(global_pca=np.load(ws / "global.npy"), local_pca=(np.load(ws / "local0.npy"), np.load(ws / "local1.npy")))
cfg = load_config([], [f"workspace={ws}", "model.hidden=16", "model.max_len=20", "train.batch_size=32",
                       "train.progress=false", "eval.num_negatives=30", "train.epochs=2", "model.beta=0"])
train_run(cfg, ws / "runs" / "ddp", ds, item_vectors=vectors)
"""


def test_two_process_data_parallel_run(world, tmp_path):
    ds, vectors, _ = world
    ds.save(tmp_path / "dataset")
    np.save(tmp_path / "global.npy", vectors.global_pca)
    for d in (0, 1):
        np.save(tmp_path / f"local{d}.npy", vectors.local_pca[d])
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs_run"] == 2 and results["test"]["sampled"]["overall"]["users"] == ds.n_users
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2  # rank 0 alone writes
    assert "epoch 2/2" in (run_dir / "train.log").read_text()


def test_train_evaluate_and_compare_commands(world, tmp_path, capsys):
    from llm4cdsr.cli import main

    ds, _, _ = world
    ds.save(tmp_path / "dataset")
    common = ["-w", str(tmp_path), f"model.hidden={HIDDEN}", "model.max_len=20", "train.progress=false",
              "eval.num_negatives=30", "train.epochs=1"]
    assert main(["train", *common, "model.name=pop", "--run-name", "pop"]) == 0
    assert main(["train", *common, "model.name=sasrec_mixed", "--run-name", "sas1"]) == 0
    assert main(["train", *common, "model.name=sasrec_mixed", "seed=3", "--run-name", "sas3"]) == 0
    assert main(["train", *common, "model.name=sasrec_mixed", "--run-name", "sas1"]) == 0  # the same command: its results
    assert main(["train", *common, "model.name=sasrec_mixed", "train.lr=0.01", "--run-name", "sas1"]) == 2  # another config
    assert main(["train", *common, "model.name=sasrec_mixed", "--run-name", "sas1", "--resume"]) == 0
    assert main(["train", *common, "model.name=llm4cdsr", "--run-name", "x"]) == 2  # no embeddings in this workspace
    out = capsys.readouterr().out
    assert "hit@10" in out and "run folder" in out
    assert main(["compare", "-w", str(tmp_path), "pop", "sas1", "sas3", "--reference", "pop"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("sasrec_mixed"))
    assert " 2 " in row and "±" in row  # two seeds in one group, with a p-value
    assert main(["evaluate", str(tmp_path / "runs" / "sas1"), "eval.num_negatives=20"]) == 0
    assert "valid:" in capsys.readouterr().out


def test_a_key_added_to_the_package_after_a_run_started_does_not_block_its_resume(tmp_path):
    cfg = load_config([], ["train.epochs=3"])
    saved = {section: dict(values) if isinstance(values, dict) else values for section, values in cfg.items()}
    del saved["model"]["empty_local_state"]  # a run saved before the key existed
    (tmp_path / "config.yaml").write_text(dump_config(saved), encoding="utf-8")
    (tmp_path / CHECKPOINT).write_bytes(b"")
    assert resumes_as_is(tmp_path, cfg)  # the key now holds its default: the run was made with it
    assert not resumes_as_is(tmp_path, load_config([], ["train.epochs=3", "model.empty_local_state=ln_bias"]))
    assert not resumes_as_is(tmp_path, load_config([], ["train.epochs=3", "model.alpha=0.5"]))


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_train_optimizer_chooses_how_weight_decay_acts(tmp_path, kind):
    cfg = trainer_module.TrainerConfig.from_section(
        {**_cfg(tmp_path, f"train.optimizer={kind}", "train.weight_decay=0.5", "train.lr=0.1")["train"]}, "ndcg@10")
    weight = torch.nn.Parameter(torch.full((3,), 2.0))
    module = torch.nn.Module()
    module.weight = weight
    trainer = trainer_module.Trainer(module, None, None, cfg, tmp_path, torch.device("cpu"), 0)
    weight.grad = torch.zeros(3)  # no signal from the data: only the decay acts
    trainer.optimizer.step()
    if kind == "adamw":  # decoupled: w <- w (1 - lr wd), whatever Adam's moments say
        assert isinstance(trainer.optimizer, torch.optim.AdamW)
        np.testing.assert_allclose(weight.detach().numpy(), 2.0 * (1 - 0.1 * 0.5), rtol=1e-6)
    else:  # L2 in the gradient: Adam normalises it, so the first step is lr whatever the decay
        assert type(trainer.optimizer) is torch.optim.Adam
        np.testing.assert_allclose(weight.detach().numpy(), 2.0 - 0.1, rtol=1e-5)
