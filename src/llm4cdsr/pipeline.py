"""The main job, `llm4cdsr run`: prepare -> embed -> profile -> train (and evaluate) -> report.

Every stage is skipped when its artifacts are current (each stage records a hash of the inputs
and config that made it), so running the same command again costs nothing, and an interrupted
run picks up where it stopped: the LLM stages resume from their call cache and training resumes
from its last checkpoint.
"""
from __future__ import annotations

import copy
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from llm4cdsr.config import ConfigError, default_config
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.prepare import resolve_inputs, run_prepare, workspace_data_config
from llm4cdsr.io import load_npy, read_json, stable_hash
from llm4cdsr.llm.stages import profile_dir, run_embed, run_profile
from llm4cdsr.locks import folder_lock
from llm4cdsr.models import model_needs
from llm4cdsr.report import build_report
from llm4cdsr.training.candidates import dataset_fingerprint
from llm4cdsr.training.run import check_llm_inputs, train_run
from llm4cdsr.training.trainer import CHECKPOINT
from llm4cdsr.validation import validate_config
from llm4cdsr.workspace import Workspace, load_item_vectors, load_profile_embeddings

log = logging.getLogger("llm4cdsr.run")

# The sections that decide what a training run is (and so its default folder name).
RUN_SECTIONS = ("seed", "data", "embed", "profile", "model", "train", "eval")
# Keys of those sections that change how a run is shown or how fast it goes, never what it
# learns: a user who turns the progress bar off must not train again under a new folder name.
DISPLAY_KEYS = (("train", "progress"), ("train", "num_threads"), ("train", "tensorboard"))
# Keys added after runs were named, at the value every earlier run had in effect: a run
# config without them, or with them at that value, keeps its name and stays current.
LATER_KEYS = ((("data", "duplicates"), "drop"), (("data", "encoding"), "utf-8"))


def run_identity(cfg: dict) -> dict:
    """The sections that decide what a run is, display keys set to their defaults (not dropped,
    so runs trained with the default display settings keep the folder names they had)."""
    ident = {s: copy.deepcopy(cfg.get(s)) for s in RUN_SECTIONS}
    defaults = default_config()
    for section, key in DISPLAY_KEYS:
        if isinstance(ident.get(section), dict):
            ident[section][key] = defaults[section][key]
    for (section, key), value in LATER_KEYS:
        if isinstance(ident.get(section), dict) and ident[section].get(key, value) == value:
            ident[section].pop(key, None)
    return ident


def run_name(cfg: dict) -> str:
    if cfg["run"]["name"]:
        return cfg["run"]["name"]
    return f"{cfg['model']['name']}-seed{cfg['seed']}-{stable_hash(run_identity(cfg))[:8]}"


def run_dir_for(cfg: dict) -> Path:
    return Workspace(cfg["workspace"]).runs_dir / run_name(cfg)


def _check_stages(cfg: dict) -> tuple[list[str], set[str]]:
    validate_config(cfg, "run")  # every value, before any stage makes a folder
    return list(cfg["run"]["stages"]), set(cfg["run"]["force"])


def load_llm_inputs(cfg: dict, dataset) -> tuple[Any, np.ndarray | None]:
    """The LLM artifacts the configured model reads (None where it reads none)."""
    needs = model_needs(cfg["model"])
    check_llm_inputs(cfg, needs)  # `train` alone, or `run` without its embed stage: never stale inputs
    ws = Workspace(cfg["workspace"])
    vectors = load_item_vectors(ws, dataset.domains) if "item_vectors" in needs else None
    profiles = load_profile_embeddings_for(cfg) if "profiles" in needs else None
    return vectors, profiles


def load_profile_embeddings_for(cfg: dict) -> np.ndarray:
    folder = profile_dir(cfg)
    ws = Workspace(cfg["workspace"])
    if folder == ws.profile_dir:
        return load_profile_embeddings(ws)
    return load_npy(folder / "embeddings.npy")


def run_pipeline(cfg: dict) -> Path:
    """Run the configured stages; return the run folder."""
    stages, force = _check_stages(cfg)
    cfg, adopted = workspace_data_config(cfg)
    if adopted:
        log.info(adopted)
    needs = model_needs(cfg["model"])
    run_dir = run_dir_for(cfg)
    timings: dict[str, float] = {}
    dataset = None

    def timed(name: str, fn):
        started = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - started, 2)
        return out

    if "prepare" in stages:
        dataset = timed("prepare", lambda: prepare_stage(cfg, force="prepare" in force, adopted=bool(adopted)))
    if "embed" in stages and "item_vectors" in needs | ({"item_vectors"} if "profiles" in needs else set()):
        timed("embed", lambda: run_embed(cfg, force="embed" in force))
    if "profile" in stages and "profiles" in needs:
        timed("profile", lambda: run_profile(cfg, force="profile" in force))
    if "train" in stages:
        timed("train", lambda: train_stage(cfg, run_dir, dataset, force="train" in force))
    if "train" in stages and "report" in stages and baseline_configs(cfg):
        # Seconds of work that give the first report a point of comparison (a line first: on real
        # data they took 51 s with nothing on the screen).
        log.info("baselines: training %s for the report's comparison", ", ".join(b["model"]["name"] for b in baseline_configs(cfg)))
        timed("baselines", lambda: [train_stage(b, run_dir_for(b), dataset) for b in baseline_configs(cfg)])
    if "report" in stages:
        log.info("report: %s/report, unless current (plots and the item map take a while on real data)", run_dir)
        timed("report", lambda: report_stage(cfg, run_dir, force="report" in force))
    log.info("run %s done; stage seconds: %s", run_dir, ", ".join(f"{k} {v}" for k, v in timings.items()))
    return run_dir


def prepare_stage(cfg: dict, force: bool = False, adopted: bool = False) -> PreparedDataset:
    """run_prepare; a workspace's own dataset whose input files are gone is used as it is (there is
    nothing to prepare it from again), saying so."""
    if adopted and not force:
        try:
            resolve_inputs(cfg["data"])
        except DataError as e:
            log.warning("data: %s; using the workspace's dataset as it is", e)
            return PreparedDataset.load(Workspace(cfg["workspace"]).dataset_dir)
    return run_prepare(cfg, force=force)


def train_stage(cfg: dict, run_dir: Path, dataset=None, force: bool = False) -> dict:
    """Train and evaluate unless the run folder already holds results for this very config."""
    # The check, the removal (--force) and the training are one write: no other process between them.
    with folder_lock(run_dir, hint=" (or set another run.name)"):
        results_path = run_dir / "results.json"
        if results_path.is_file() and not force:
            saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
            if _same_run(saved, cfg):
                if dataset is None:
                    dataset = PreparedDataset.load(Workspace(cfg["workspace"]).dataset_dir)
                info_path = run_dir / "dataset_info.json"
                trained_on = read_json(info_path).get("fingerprint") if info_path.is_file() else None
                if trained_on and trained_on != dataset_fingerprint(dataset):
                    raise ConfigError(f"{run_dir} was trained on another dataset than the one in {cfg['workspace']}/dataset "
                                      "now; --force train trains it again (or set another run.name)")
                log.info("train: %s is current, skipped", run_dir)
                return read_json(results_path)
            raise ConfigError(f"{run_dir} holds a run with another config; set run.name to a new name")
        if force and run_dir.exists():
            shutil.rmtree(run_dir)
        if dataset is None:
            dataset = PreparedDataset.load(Workspace(cfg["workspace"]).dataset_dir)
        vectors, profiles = load_llm_inputs(cfg, dataset)
        resume = (run_dir / CHECKPOINT).is_file()
        if resume:
            log.info("train: resuming %s from its last checkpoint", run_dir)
        return train_run(cfg, run_dir, dataset, item_vectors=vectors, profiles=profiles, resume=resume)


def _same_run(saved: dict, cfg: dict) -> bool:
    """Equal in everything that shapes the run (not in how it is shown or which stages run)."""
    return run_identity(saved) == run_identity(cfg)


def baseline_configs(cfg: dict) -> list[dict]:
    """The run.baselines runs (names checked by validation.py): the same config with another
    model.name, under their own default names, each from the usual random start (model.init_from
    names runs of the main model's choosing)."""
    return [dict(cfg, model=dict(cfg["model"], name=name, init_from=[]), run=dict(cfg["run"], name=""))
            for name in cfg["run"].get("baselines", []) if name != cfg["model"]["name"]]


def report_stage(cfg: dict, run_dir: Path, force: bool = False) -> Path:
    path, written = build_report(run_dir, metric=cfg["run"]["report_metric"], item_map_items=cfg["run"]["item_map_items"],
                                 seed=cfg["seed"], force=force)
    log.info("report: %s%s", path, "" if written else " is current, skipped")
    return path
