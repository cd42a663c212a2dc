"""One training run, start to finish: the entry point of `llm4cdsr train`, the API and experiments.

    results = train_run(cfg, run_dir, dataset, split=None, item_vectors=None, profiles=None, resume=False)
    model, cfg, dataset_info = load_run(run_dir)

The run folder:
    config.yaml         resolved config, written before training starts
    command.txt         the command line
    dataset_info.json   domains, item counts, vector widths (what load_run needs to rebuild the model)
    train.log           the log
    metrics.jsonl       one line per epoch: train loss (and parts), valid metrics, times
    model.safetensors   best-on-validation weights
    checkpoint.pt       the last epoch's resumable state (torch.load(..., weights_only=True))
    results.json        valid and test metrics, both modes, overall / per domain / by group; best_epoch
    ranks.parquet       per-user test ranks (both modes) with the group attributes, for significance tests
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import sys
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load as load_weights
from safetensors.torch import load_file

from llm4cdsr.config import default_config, dump_config
from llm4cdsr.data.dataset import SYNTHETIC_NOTE, PreparedDataset, Split
from llm4cdsr.io import DamagedArtifactError, damaged, read_json, read_yaml, write_json
from llm4cdsr.llm.stages import dataset_fingerprint as files_fingerprint
from llm4cdsr.llm.stages import embed_config_hash, made_from, profile_config_hash
from llm4cdsr.locks import folder_lock
from llm4cdsr.models import build_model, model_shell
from llm4cdsr.models.base import LossConfig, Recommender
from llm4cdsr.training.batching import TrainBatches
from llm4cdsr.training.candidates import dataset_fingerprint, load_or_draw
from llm4cdsr.training.diagnostics import adapter_mixing
from llm4cdsr.training.evaluate import (
    MODES,
    eval_inputs,
    rank_targets,
    summarize,
    user_frame,
)
from llm4cdsr.training.metrics import metrics_from_ranks, parse_metric
from llm4cdsr.training.trainer import (
    BEST_WEIGHTS,
    CHECKPOINT,
    Trainer,
    TrainerConfig,
    atomic_write_text,
    save_weights,
)
from llm4cdsr.validation import validate_config
from llm4cdsr.workspace import ArtifactError, Workspace, profile_dir

log = logging.getLogger("llm4cdsr.training")

# Keys a resumed run may change: extending or shortening the schedule changes nothing already done;
# the workspace path may change (a copied or moved workspace resumes), and so may what `run` does
# around training.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "patience"), ("train", "progress"), ("train", "num_threads"),
                     ("train", "tensorboard"), ("workspace",), ("run",)}


# What may differ for the very same command to continue a run by itself (no --resume needed).
SAME_COMMAND_CHANGES = RESUMABLE_CHANGES - {("train", "epochs"), ("train", "patience")}


def resumes_as_is(run_dir: Path, cfg: dict) -> bool:
    """True when `run_dir` holds a started run of this very config (display keys, the workspace path
    and `run`'s own keys aside): running the same command again continues it."""
    run_dir = Path(run_dir)
    if not ((run_dir / CHECKPOINT).is_file() or (run_dir / "results.json").is_file()):
        return False
    return made_with(run_dir, cfg)


def made_with(run_dir: Path, cfg: dict) -> bool:
    """True when `run_dir`'s saved config is this config (display keys, the workspace path and `run`'s
    own keys aside), whether or not the run got anywhere."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return False
    return not [k for k in _diff(read_yaml(saved), cfg) if k[:1] not in SAME_COMMAND_CHANGES and k[:2] not in SAME_COMMAND_CHANGES]


class RunError(RuntimeError):
    """The run folder is in a state that forbids the request (exists, differs, unfinished)."""


def train_run(
    cfg: dict,
    run_dir: Path,
    dataset: PreparedDataset,
    split: Split | None = None,
    item_vectors=None,
    profiles: np.ndarray | None = None,
    resume: bool = False,
) -> dict:
    """Train (unless the model has nothing to train), select the best epoch on validation, evaluate
    on test in both modes, and write the run folder. Returns the results dict (results.json)."""
    run_dir = Path(run_dir)
    validate_config(cfg)  # every value, before the run folder exists
    created_group = _init_distributed(cfg)
    rank = dist.get_rank() if dist.is_initialized() else 0
    device = resolve_device(cfg.get("device", "auto"))
    _set_threads(cfg["train"]["num_threads"], device)
    split = split if split is not None else dataset.split()
    handler = None
    folder = contextlib.ExitStack()
    try:
        if rank == 0:  # one writer per run folder, for the whole run (the other ranks write nothing)
            folder.enter_context(folder_lock(run_dir, hint=" (or choose another --run-name)"))
            _prepare_folder(run_dir, cfg, resume)
            handler = _attach_log(run_dir / "train.log")
        if dist.is_initialized():
            dist.barrier()
        if resume and (run_dir / "results.json").is_file():
            log.info("%s is finished; returning its results", run_dir)
            return read_json(run_dir / "results.json")
        results = _train_and_evaluate(cfg, run_dir, dataset, split, item_vectors, profiles, resume, device, rank)
        if dist.is_initialized():
            dist.barrier()
        return results
    finally:
        if handler is not None:
            logging.getLogger("llm4cdsr").removeHandler(handler)
            handler.close()
        if created_group:
            dist.destroy_process_group()
        folder.close()


def _train_and_evaluate(cfg, run_dir, dataset, split, item_vectors, profiles, resume, device, rank) -> dict:
    model_cfg, train_cfg, eval_cfg = cfg["model"], cfg["train"], cfg["eval"]
    info = {**dataset_info(dataset, item_vectors, profiles), **llm_input_digests(item_vectors, profiles)}
    if rank == 0:
        write_json(run_dir / "dataset_info.json", info)
    torch.manual_seed(cfg["seed"])  # the same initial weights on every process
    loss = LossConfig.from_section(train_cfg)
    model = build_model(model_cfg, info, item_vectors, profiles, loss=loss)
    model.fit_statistics(split.train_offsets, split.train_items)
    started_from = warm_start(model, model_cfg.get("init_from", []), Workspace(cfg["workspace"]), info["fingerprint"])
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model %s: %s parameters, %s trainable; device %s", model_cfg["name"], f"{n_params:,}", f"{n_trainable:,}", device)
    synthetic = bool(dataset.meta.get("synthetic", False))
    if synthetic:
        log.warning("data: %s", SYNTHETIC_NOTE)

    # Rank 0 draws (or reads) the candidates first; the others then read the saved files.
    ws = Workspace(cfg["workspace"])
    cands = load_candidates(ws, dataset, split, eval_cfg) if rank == 0 else None
    if dist.is_initialized():
        dist.barrier()
        if rank != 0:
            cands = load_candidates(ws, dataset, split, eval_cfg)

    valid_inputs = eval_inputs(split, "valid")
    score_key = train_cfg["valid_metric"]
    _, k = parse_metric(score_key)
    if train_cfg["valid_mode"] not in MODES:
        raise ValueError(f"train.valid_mode must be one of {MODES}, got {train_cfg['valid_mode']!r}")

    def validate(module: Recommender) -> dict[str, float]:
        ranks = rank_targets(module, valid_inputs, dataset.n_items, cands["valid"], (train_cfg["valid_mode"],),
                             eval_cfg["batch_size"], device, local_negatives=cands.get("valid_local"))[train_cfg["valid_mode"]]
        return metrics_from_ranks(ranks, sorted(set(eval_cfg["ks"]) | {k}))

    started = time.perf_counter()
    state: dict[str, Any] = {"best_epoch": 0, "epoch": 0, "history": []}
    if model.trainable:
        batches = TrainBatches(split.train_offsets, split.train_items, dataset.n_items, model.max_len,
                               train_cfg["batch_size"], cfg["seed"], train_cfg["bucket_pool"], train_cfg["dynamic_padding"], loss,
                               loss_norm=train_cfg.get("loss_norm", "batch"))
        diagnose = None
        if getattr(getattr(model, "global_items", None), "kind", None) == "llm":
            # The bridge's measure, each epoch: cross-domain neighbours after the adapter (the report's sample).
            diagnose = adapter_mixing(model.global_items, dataset.n_items)
            if rank == 0:
                log.info("cross-domain neighbours of the LLM vectors (before the adapter): %.4f", diagnose.before())
        trainer = Trainer(model, batches, validate, TrainerConfig.from_section(train_cfg, score_key), run_dir, device, cfg["seed"],
                          diagnose=diagnose)
        state = trainer.fit(resume)
        if state["best_epoch"] == 0:
            raise RunError(f"{run_dir}: no epoch was trained (train.epochs = {train_cfg['epochs']})")
    train_s = time.perf_counter() - started
    if rank != 0:  # rank 0 alone evaluates and writes
        return {}
    if model.trainable:
        model.load_state_dict(load_file(str(run_dir / BEST_WEIGHTS), device=str(device)))
    else:
        save_weights(model, run_dir / BEST_WEIGHTS)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "model": model_cfg["name"], "run": run_dir.name, "seed": cfg["seed"],
        "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
        "stopped_early": bool(state.get("stopped", False)),
        "parameters": {"total": n_params, "trainable": n_trainable},
        # What the model trained with: its own objective where it has one (C2DSR's full softmax).
        "loss": (getattr(model, "objective", None) or getattr(model, "loss", loss)).kind if model.trainable else None,
        "sampled_scoring": sampled_scoring(model, eval_cfg),
        "init_from": started_from,
        "dataset": {"domains": list(dataset.domains), "users": dataset.n_users, "fingerprint": info["fingerprint"],
                    "synthetic": synthetic},
        "llm_inputs": {k: info[k] for k in ("item_vectors_sha256", "profiles_sha256") if k in info},
    }
    # Minutes on a large set (full ranking of every user over a whole domain, twice): say so first.
    log.info("evaluating the best epoch (%d) on validation and test, sampled and full ranking, %s users",
             state["best_epoch"], f"{dataset.n_users:,}")
    summaries, frames = evaluate_model(model, dataset, split, cands, eval_cfg, device)
    results.update(summaries)
    history = state["history"]
    results["time"] = {
        "total_train_s": round(train_s, 2),
        "train_s_per_epoch": round(float(np.mean([r["train_s"] for r in history])), 3) if history else 0.0,
        "valid_s_per_epoch": round(float(np.mean([r["valid_s"] for r in history])), 3) if history else 0.0,
        "final_eval_s": round(time.perf_counter() - started, 2),
    }
    frames["test"].to_parquet(run_dir / "ranks.parquet", index=False)
    write_json(run_dir / "results.json", results)
    log.info("test %s%s", "[SYNTHETIC data] " if synthetic else "", _headline(results, dataset.domains))
    return results


def warm_start(model: Recommender, runs: list[str], workspace: Workspace, fingerprint: str) -> list[dict]:
    """model.init_from: copy each finished run's best weights into `model`, in order, through the
    model's name mapping (`Recommender.warm_start`). Returns what each run gave, for results.json."""
    started_from = []
    for entry in runs:
        source = workspace.run_folder(entry)
        if not (source / "results.json").is_file() or not (source / BEST_WEIGHTS).is_file():
            raise RunError(f"model.init_from: {source} is not a finished run (no results.json and {BEST_WEIGHTS})")
        done = read_json(source / "results.json")
        if done.get("dataset", {}).get("fingerprint") != fingerprint:
            raise RunError(f"model.init_from: {source} was trained on another dataset (fingerprint "
                           f"{done.get('dataset', {}).get('fingerprint')!r}, this one {fingerprint!r})")
        weights = (source / BEST_WEIGHTS).read_bytes()  # read once: loaded and hashed
        try:
            names = model.warm_start(done["model"], load_weights(weights))
        except ValueError as e:
            raise RunError(f"model.init_from: {source}: {e}") from None
        if not names:
            raise RunError(f"model.init_from: {source} ({done['model']}) holds no tensor {type(model).__name__} can start from")
        log.info("started from %s (%s): %d tensors", source, done["model"], len(names))
        started_from.append({"run": entry, "model": done["model"], "tensors": len(names),
                             "weights_sha256": hashlib.sha256(weights).hexdigest()})
    return started_from


def evaluate_model(model: Recommender, dataset: PreparedDataset, split: Split, cands: dict[str, np.ndarray],
                   eval_cfg: dict, device: torch.device | str = "cpu") -> tuple[dict, dict[str, pd.DataFrame]]:
    """Both stages, both modes: ({stage: {mode: summary}}, {stage: per-user frame})."""
    counts = np.bincount(split.train_items.astype(np.int64), minlength=dataset.n_items_total + 1)
    summaries: dict[str, dict] = {}
    frames: dict[str, pd.DataFrame] = {}
    for stage in ("valid", "test"):
        inputs = eval_inputs(split, stage)
        ranks = rank_targets(model, inputs, dataset.n_items, cands[stage], MODES, eval_cfg["batch_size"], device,
                             local_negatives=cands.get(f"{stage}_local"))
        frames[stage] = user_frame(dataset, split, inputs.targets, ranks, counts)
        summaries[stage] = {
            mode: summarize(frames[stage], mode, dataset.domains, eval_cfg["ks"], eval_cfg["length_buckets"], eval_cfg["popularity_buckets"])
            for mode in MODES
        }
    return summaries, frames


def evaluate_run(run_dir: Path, eval_cfg: dict | None = None, workspace: Path | None = None) -> dict:
    """Score a finished run's best weights again (e.g. with other eval settings): {stage: {mode: summary}}
    and "sampled_scoring" (which ruler the sampled mode used).

    The workspace is the one holding the run (<workspace>/runs/<name>), else the run's config's.
    """
    run_dir = Path(run_dir)
    model, cfg, info = load_run(run_dir)
    ws = Workspace(workspace) if workspace is not None else Workspace(run_dir.resolve().parent.parent)
    if workspace is None and not (ws.dataset_dir / "meta.json").is_file():
        ws = Workspace(cfg["workspace"])
    dataset = PreparedDataset.load(ws.dataset_dir)
    if info.get("fingerprint") and info["fingerprint"] != dataset_fingerprint(dataset):
        raise RunError(f"{run_dir}: the dataset in {ws.dataset_dir} changed since this run was trained")
    eval_cfg = eval_cfg or cfg["eval"]
    split = dataset.split()
    cands = load_candidates(ws, dataset, split, eval_cfg)
    device = resolve_device(cfg.get("device", "auto"))
    summaries, _ = evaluate_model(model.to(device), dataset, split, cands, eval_cfg, device)
    return {**summaries, "sampled_scoring": sampled_scoring(model, eval_cfg)}


def check_llm_inputs(cfg: dict, needs: set[str]) -> None:
    """Refuse embeddings or profiles made from another dataset or other settings than `cfg`'s: a
    stage that reads them (train, experiments) would otherwise train on stale texts without a word,
    or fail on a shape. Missing artifacts are left to the loaders (they say which command makes them)."""
    if not needs & {"item_vectors", "profiles"}:
        return
    ws = Workspace(cfg["workspace"])
    embed_meta = ws.meta(ws.embed_dir)
    if embed_meta is None:
        return
    again = " (with this command's -c files and overrides)"
    if not made_from(embed_meta.get("dataset_fingerprint"), ws.dataset_dir):
        raise ArtifactError(f"{ws.embed_dir} is stale: made from another dataset than {ws.dataset_dir} (fingerprint "
                            f"{embed_meta.get('dataset_fingerprint')}, now {files_fingerprint(ws.dataset_dir)}); rebuild it with "
                            f"`llm4cdsr embed -w {ws.root}`{again}")
    # The embeddings are this dataset's: the profiles must be made from the same (as they recorded it).
    fingerprint = embed_meta.get("dataset_fingerprint")
    if embed_meta.get("config_hash") != embed_config_hash(cfg):
        raise ArtifactError(f"{ws.embed_dir} is stale: made under other embed.* settings (config "
                            f"{embed_meta.get('config_hash')}, now {embed_config_hash(cfg)}); rebuild it with "
                            f"`llm4cdsr embed -w {ws.root}`{again}")
    folder = profile_dir(cfg)
    profile_meta = ws.meta(folder) if "profiles" in needs else None
    if profile_meta is None:
        return
    for key, now, what in (("dataset_fingerprint", fingerprint, "another dataset"),
                           ("embed_config_hash", embed_meta.get("config_hash"), "other item embeddings"),
                           ("config_hash", profile_config_hash(cfg), "other profile.* settings")):
        if profile_meta.get(key) != now:
            raise ArtifactError(f"{folder} is stale: made from {what} ({key} {profile_meta.get(key)}, now {now}); "
                                f"rebuild it with `llm4cdsr profile -w {ws.root}`{again}")


def load_candidates(ws: Workspace, dataset: PreparedDataset, split: Split, eval_cfg: dict) -> dict[str, np.ndarray]:
    """The saved sampled candidates of eval_cfg (with the chimeric ruler's second set when asked)."""
    return load_or_draw(ws.candidates_dir, dataset, split, eval_cfg["num_negatives"], eval_cfg["candidate_seed"],
                        chimeric=bool(eval_cfg.get("chimeric_negatives", False)))


def sampled_scoring(model: Recommender, eval_cfg: dict) -> str:
    """How the sampled protocol scored this model's negatives, for results files."""
    if eval_cfg.get("chimeric_negatives", False) and model.score_split is not None:
        return "chimeric (the authors' ruler: a negative's global and local parts come from two different items)"
    return "one item per candidate"


def _headline(results: dict, domains) -> str:
    parts = []
    for mode in MODES:
        block = results["test"][mode]
        cells = [f"overall {block['overall']['hit@10']:.4f}/{block['overall']['ndcg@10']:.4f}"]
        cells += [f"{d} {block[d]['hit@10']:.4f}/{block[d]['ndcg@10']:.4f}" for d in domains if d in block]
        parts.append(f"{mode} hit@10/ndcg@10: " + ", ".join(cells))
    return f"(best epoch {results['best_epoch']}) " + " | ".join(parts)


def load_run(run_dir: Path) -> tuple[Recommender, dict, dict]:
    """The best weights of a run, ready to score (eval mode, CPU): (model, cfg, dataset_info)."""
    run_dir = Path(run_dir)
    if not (run_dir / BEST_WEIGHTS).is_file():
        raise RunError(f"{run_dir}: no {BEST_WEIGHTS}; the run has not finished an epoch")
    cfg = read_yaml(run_dir / "config.yaml")
    info = read_json(run_dir / "dataset_info.json")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise damaged(run_dir / "config.yaml", "not the config a run writes")
    if not isinstance(info, dict):
        raise damaged(run_dir / "dataset_info.json", "not the mapping a run writes")
    model = model_shell(cfg["model"], info)
    weights = run_dir / BEST_WEIGHTS
    try:
        model.load_state_dict(load_file(str(weights)))
    except SafetensorError as e:  # truncated or corrupt
        raise damaged(weights, e) from None
    except RuntimeError as e:  # missing or mis-shaped tensors: weights of another model or a damaged file
        raise damaged(weights, str(e).splitlines()[0]) from None
    model.eval()
    return model, cfg, info


def dataset_info(dataset: PreparedDataset, item_vectors=None, profiles: np.ndarray | None = None) -> dict:
    info: dict[str, Any] = {
        "domains": list(dataset.domains),
        "n_items": [int(n) for n in dataset.n_items],
        "n_users": int(dataset.n_users),
        "fingerprint": dataset_fingerprint(dataset),
    }
    if item_vectors is not None:
        info["global_dim"] = int(item_vectors.global_pca.shape[1])
    if profiles is not None:
        info["profile_dim"] = int(profiles.shape[1])
    return info


def llm_input_digests(item_vectors=None, profiles: np.ndarray | None = None) -> dict[str, str]:
    """The exact LLM inputs of a training run, by content: a run made again elsewhere can tell whether
    it got the same vectors (the dataset's fingerprint does not cover them). Apart from dataset_info,
    which model building needs, so that only a training run pays for hashing the vectors."""
    out = {}
    if item_vectors is not None:
        parts = (getattr(item_vectors, "raw", None), item_vectors.global_pca, *getattr(item_vectors, "local_pca", ()))
        out["item_vectors_sha256"] = array_digest(*(a for a in parts if a is not None))
    if profiles is not None:
        out["profiles_sha256"] = array_digest(profiles)
    return out


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 (16 hex digits) of arrays' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# ----- run folder --------------------------------------------------------------------------


def _prepare_folder(run_dir: Path, cfg: dict, resume: bool) -> None:
    started = (run_dir / CHECKPOINT).is_file() or (run_dir / "results.json").is_file()
    if started and not resume:
        raise RunError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-name")
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.yaml"
    if resume and (run_dir / CHECKPOINT).is_file():
        check_checkpoint(run_dir / CHECKPOINT)
    if resume and saved.is_file():
        before = read_yaml(saved)
        changed = [k for k in _diff(before, cfg) if k[:1] not in RESUMABLE_CHANGES and k[:2] not in RESUMABLE_CHANGES]
        if changed:
            raise RunError(f"{run_dir}: --resume with a different config ({', '.join('.'.join(k) for k in changed)})")
    atomic_write_text(saved, dump_config(cfg))
    with open(run_dir / "command.txt", "a" if resume else "w", encoding="utf-8") as f:  # a resume adds its line
        f.write(shlex.join(sys.argv) + "\n")


def check_checkpoint(path: Path) -> None:
    """A checkpoint (torch's zip format) whose every member passes its CRC; otherwise one line naming it.
    torch.load of a truncated one says only `PytorchStreamReader failed reading zip archive`."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        bad = str(e) or type(e).__name__
    else:
        bad = f"member {bad} fails its CRC" if bad else None
    if bad:
        raise DamagedArtifactError(f"{path}: damaged or truncated ({bad}); the run cannot resume from it: remove "
                                   f"{path.parent} to train the run from its start, or train under another --run-name")


_MISSING = object()


def _diff(saved: Any, current: Any, prefix: tuple = (), defaults: Any = _MISSING) -> list[tuple]:
    """Keys whose values differ between a run's saved config and the current one.

    A key absent from the saved config that now holds its built-in default is no difference: the
    key was added to the package after the run started, and models read a missing key as its
    default, so the run was made with that very behaviour.
    """
    if defaults is _MISSING:
        defaults = default_config()
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[tuple] = []
        for key in sorted(set(saved) | set(current)):
            default = defaults.get(key, _MISSING) if isinstance(defaults, dict) else _MISSING
            if key not in saved and default is not _MISSING and current.get(key) == default:
                continue
            out += _diff(saved.get(key), current.get(key), prefix + (key,), default)
        return out
    return [] if saved == current else [prefix]


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("llm4cdsr")
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


# ----- devices and processes ---------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """auto: cuda if available (cuda:LOCAL_RANK under torchrun), else cpu."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def _init_distributed(cfg: dict) -> bool:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPU); True if this call made it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    device = resolve_device(cfg.get("device", "auto"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=60))
    return True


def _set_threads(num_threads: int, device: torch.device) -> None:
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    elif device.type == "cpu" and dist.is_initialized():
        # Processes on one machine would otherwise each take every core.
        torch.set_num_threads(max((os.cpu_count() or 1) // dist.get_world_size(), 1))
