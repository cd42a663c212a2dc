"""Where each stage's artifacts live inside a workspace folder, and how they are read back.

    <workspace>/
      dataset/            `prepare`  (see llm4cdsr.data.dataset)
      embeddings/         `embed`
        texts.parquet       global_id, text  (the item texts that were embedded)
        items.npy           float32 (N + 1, D): raw LLM embedding per global item id, row 0 zeros
        pca.safetensors     "global" (N + 1, d_g); "local.<domain>" (n_domain + 1, H) per domain,
                            indexed by LOCAL id, row 0 zeros; plus each PCA's mean/components
        meta.json           model name, dims, config hash, dataset fingerprint
      profiles/           `profile`
        profiles.parquet    user_idx, text, source ("llm" | "fallback" | "template")
        embeddings.npy      float32 (U, D): profile embedding per user index
        report.json         calls, fallbacks, failures, time
        meta.json           backend, models, config hash, dataset fingerprint
      candidates/         sampled-evaluation candidates, drawn once and shared by every model
      cache.sqlite        every embedding and chat call, keyed by backend, model, parameters, text
      runs/<name>/        one folder per training run
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from llm4cdsr.io import load_npy, read_json


class ArtifactError(RuntimeError):
    """An artifact a stage needs is missing or was made from other inputs."""


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    @property
    def embed_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def profile_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def candidates_dir(self) -> Path:
        return self.root / "candidates"

    @property
    def cache_path(self) -> Path:
        return self.root / "cache.sqlite"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_folder(self, entry: str | Path) -> Path:
        """A run folder named in a config (model.init_from): as given if absolute, else inside the
        workspace (so a config names runs the same way on every machine)."""
        path = Path(entry)
        return path if path.is_absolute() else self.root / path

    def meta(self, stage_dir: Path) -> dict | None:
        path = stage_dir / "meta.json"
        return read_json(path) if path.is_file() else None


def profile_dir(cfg: dict) -> Path:
    """The profile stage's folder: `<workspace>/<profile.output>` (profiles of another setting live
    beside the default ones)."""
    return Path(cfg["workspace"]) / cfg["profile"]["output"]


@dataclass
class ItemVectors:
    raw: np.ndarray  # (N + 1, D) raw LLM embeddings by global id
    global_pca: np.ndarray  # (N + 1, d_g) by global id
    local_pca: tuple[np.ndarray, np.ndarray]  # per domain, (n_d + 1, H) by local id


def load_item_vectors(ws: Workspace, domains: tuple[str, str]) -> ItemVectors:
    d = ws.embed_dir
    if not (d / "meta.json").is_file():
        raise ArtifactError(f"{d}: no item embeddings; run `llm4cdsr embed` first")
    raw = load_npy(d / "items.npy")
    tensors = load_file(str(d / "pca.safetensors"))
    return ItemVectors(
        raw=raw,
        global_pca=tensors["global"],
        local_pca=(tensors[f"local.{domains[0]}"], tensors[f"local.{domains[1]}"]),
    )


def load_profile_embeddings(ws: Workspace) -> np.ndarray:
    d = ws.profile_dir
    if not (d / "meta.json").is_file():
        raise ArtifactError(f"{d}: no user profiles; run `llm4cdsr profile` first")
    return load_npy(d / "embeddings.npy")
