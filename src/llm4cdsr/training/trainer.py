"""A trainer that knows nothing about the model (after minGPT's trainer.py).

It needs: a module whose forward(batch) returns {"loss": scalar, <part>: detached scalar, ...}
(optionally "terms": {name: weighted loss term with its graph}, whose gradient norms it measures on
the first batches of each epoch); a batch source with plan(epoch) -> list of batch keys and
build(key, epoch, index) -> dict of tensors; a validate(module) -> {metric: value} callback, and
optionally a diagnose(module) -> {name: value} callback logged after each epoch. It runs Adam, validates after each epoch, keeps
the best-on-validation weights (safetensors), stops after `patience` epochs without improvement,
and writes an atomic checkpoint after every epoch from which `resume` continues exactly.

Determinism: the batch source draws from (seed, epoch, batch); torch's generator (dropout) is
reseeded from (seed, epoch, rank) at the start of every epoch. A resumed run therefore repeats
what the uninterrupted run would have done, with no RNG state to carry.

Data parallel: under torchrun each process takes every world-th batch of the shared plan, DDP
averages the gradients, and rank 0 alone validates, saves and logs.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from llm4cdsr.io import FILE_MODE, temp_file, write_failure

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST_WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"
# Batches at the start of each epoch whose loss terms' gradient norms are measured (one extra
# backward pass per term each): enough to see which term drives the update, cheap beside an epoch.
GRADIENT_PROBES = 4


class BatchSource(Protocol):
    def plan(self, epoch: int) -> list: ...
    def build(self, key: Any, epoch: int, index: int) -> dict[str, torch.Tensor]: ...


@dataclass
class TrainerConfig:
    epochs: int = 200
    patience: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam: weight_decay is an L2 term in the gradient | adamw: decoupled decay
    score_key: str = "ndcg@10"  # the validation metric that selects the epoch (higher is better)
    progress: bool = True
    tensorboard: bool = False

    @classmethod
    def from_section(cls, train: dict, score_key: str) -> TrainerConfig:
        return cls(train["epochs"], train["patience"], train["lr"], train["weight_decay"], train.get("optimizer", "adam"),
                   score_key, train["progress"], train["tensorboard"])


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss is not finite); the message says where."""


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        batches: BatchSource,
        validate: Callable[[nn.Module], dict[str, float]],
        cfg: TrainerConfig,
        run_dir: Path,
        device: torch.device,
        seed: int,
        diagnose: Callable[[nn.Module], dict[str, float]] | None = None,
    ):
        self.model = model
        self.diagnose = diagnose
        self.batches = batches
        self.validate = validate
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        self.seed = seed
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        params = [p for p in model.parameters() if p.requires_grad]
        # The fused kernel: on CPU the per-parameter loop of the default Adam cost ~4x more per step.
        optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
        self.params = params
        self.optimizer = optimizer(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type in ("cpu", "cuda"))
        self.state: dict[str, Any] = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "stopped": False, "history": []}

    # ----- the loop --------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        if resume and (self.run_dir / CHECKPOINT).is_file():
            self._load_checkpoint()
            log.info("resumed after epoch %d (best %s %.4f at epoch %d)", self.state["epoch"], self.cfg.score_key,
                     self.state["best_score"], self.state["best_epoch"])
        net: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # A batch may leave a branch unused (no target of one domain, no overlap user).
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)
        writer = self._tensorboard()
        start = self.state["epoch"] + 1
        for epoch in range(start, self.cfg.epochs + 1):
            if self.state["stopped"]:
                break
            record = self._train_epoch(net, epoch)
            self._validate_and_save(epoch, record)
            if writer is not None:
                writer.add_scalar("train/loss", record["train_loss"], epoch)
                for k, v in record["valid"].items():
                    writer.add_scalar(f"valid/{k}", v, epoch)
            self.after_epoch(epoch)
        if writer is not None:
            writer.close()
        return self.state

    def after_epoch(self, epoch: int) -> None:
        """Called once the epoch's checkpoint is on disk (tests simulate a kill here)."""

    def _train_epoch(self, net: nn.Module, epoch: int) -> dict[str, Any]:
        torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, 2, self.rank]).generate_state(1)[0]))
        net.train()
        plan = self.batches.plan(epoch)
        # Every process takes the same number of batches, or DDP would wait forever.
        per_rank = max(len(plan) // self.world, 1)
        indices = [(self.rank + i * self.world) % len(plan) for i in range(per_rank)]
        sums: dict[str, torch.Tensor] = {}
        norms: dict[str, float] = {}
        started = time.perf_counter()
        # disable=None: tqdm stays quiet when stderr is not a terminal (log files, batch jobs).
        bar = tqdm(indices, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                   disable=True if not self.cfg.progress or self.rank != 0 else None)
        for step, index in enumerate(bar):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in self.batches.build(plan[index], epoch, index).items()}
            out = net(batch)
            terms = out.pop("terms", None)
            if terms and len(terms) > 1 and step < GRADIENT_PROBES and self.world == 1:
                for k, v in self._gradient_norms(terms).items():
                    norms[k] = norms.get(k, 0.0) + v / min(GRADIENT_PROBES, len(indices))
            self.optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            self.optimizer.step()
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(sums['loss']) / (step + 1):.4f}")
        means = {k: float(v) / len(indices) for k, v in sums.items()}
        if self.world > 1:
            packed = torch.tensor([means.get(k, 0.0) for k in sorted(means)], dtype=torch.float64, device=self.device)
            dist.all_reduce(packed)
            means = {k: float(v) / self.world for k, v in zip(sorted(means), packed.tolist())}
        if not math.isfinite(means.get("loss", 0.0)):
            raise TrainingError(f"epoch {epoch}: the training loss is {means.get('loss')}; lower train.lr or check the inputs")
        train_loss = means.pop("loss", float("nan"))
        record = {"epoch": epoch, "train_loss": train_loss, "loss_parts": means, "train_s": time.perf_counter() - started}
        if norms:
            record["grad_norms"] = norms
        return record

    def _gradient_norms(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """The L2 norm of each weighted loss term's gradient over the trainable parameters, and of
        their sum ("total"): how much each term moves the weights."""
        total = None
        norms = {}
        for name, term in terms.items():
            grads = torch.autograd.grad(term, self.params, retain_graph=True, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, self.params)])
            norms[name] = float(flat.norm())
            total = flat if total is None else total + flat
        norms["total"] = float(total.norm())
        return norms

    def _validate_and_save(self, epoch: int, record: dict[str, Any]) -> None:
        started = time.perf_counter()
        decision = torch.zeros(2, dtype=torch.float64, device=self.device)  # (score, improved)
        if self.rank == 0:
            valid = self.validate(self.model)
            score = float(valid[self.cfg.score_key])
            decision[0] = score
            decision[1] = float(score > self.state["best_score"])
            record["valid"] = valid
        if self.world > 1:
            dist.broadcast(decision, src=0)
        score, improved = float(decision[0]), bool(decision[1])
        record["valid_s"] = time.perf_counter() - started
        if self.diagnose is not None and self.rank == 0:
            record["diagnostics"] = self.diagnose(self.model)
        if improved:
            self.state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
        else:
            self.state["bad_epochs"] += 1
        self.state["epoch"] = epoch
        self.state["stopped"] = self.state["bad_epochs"] >= self.cfg.patience
        if self.rank != 0:
            return
        if improved:
            save_weights(self.model, self.run_dir / BEST_WEIGHTS)
        self.state["history"].append(record)
        self._save_checkpoint()
        with open(self.run_dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        parts = ", ".join(f"{k} {v:.4f}" for k, v in record["loss_parts"].items())
        norms = record.get("grad_norms", {})
        # Each term's gradient norm as a share of the whole update's: which term drives the weights.
        shares = ", ".join(f"{k} {v / norms['total']:.3f}" for k, v in norms.items() if k != "total" and norms["total"] > 0)
        extra = "".join(f" | {k} {v:.4f}" for k, v in record.get("diagnostics", {}).items())
        log.info(
            "epoch %d/%d | loss %.4f%s | valid %s %.4f (best %.4f @%d) | train %.1fs valid %.1fs%s%s%s",
            epoch, self.cfg.epochs, record["train_loss"], f" ({parts})" if parts else "", self.cfg.score_key, score,
            self.state["best_score"], self.state["best_epoch"], record["train_s"], record["valid_s"],
            f" | grad share {shares}" if shares else "", extra, " | early stop" if self.state["stopped"] else "",
        )

    # ----- checkpoints -----------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": {k: v for k, v in self.state.items()},
        }
        atomic_torch_save(payload, self.run_dir / CHECKPOINT)

    def _load_checkpoint(self) -> None:
        payload = torch.load(self.run_dir / CHECKPOINT, map_location=self.device, weights_only=True)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = payload["state"]
        if self.rank == 0:  # the log of epochs matches the checkpoint, even after a kill between the two
            lines = "".join(json.dumps(r) + "\n" for r in self.state["history"])
            atomic_write_text(self.run_dir / METRICS, lines)

    def _tensorboard(self):
        if not self.cfg.tensorboard or self.rank != 0:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("train.tensorboard is on but tensorboard is not installed (pip install 'llm4cdsr[tensorboard]'); skipping it")
            return None
        return SummaryWriter(str(self.run_dir / "tb"))


# ----- atomic writes -----------------------------------------------------------------------


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    fd, tmp = temp_file(path)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)  # safetensors writes a file of its own (0600) in tmp's place
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (RuntimeError, SafetensorError)):  # a full disk, as torch / safetensors word it
            raise write_failure(path, e) from e
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _atomic(path, write)


def save_weights(model: nn.Module, path: Path) -> None:
    """The model's state dict as safetensors (no pickle), written atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp))
