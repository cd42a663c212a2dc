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
import logging
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from llm4cdsr.io import ArtifactError, DamagedArtifactError, check_folder, damaged, load_npy, read_json

__all__ = ["ArtifactError", "Workspace", "ItemVectors", "load_item_vectors", "load_profile_embeddings", "profile_dir"]

log = logging.getLogger(__name__)


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
        """The stage folder's meta.json; None when there is none, or when a file of the folder does not
        read back (a kill or a full disk during a write): every stage then rebuilds it, as a missing one."""
        path = stage_dir / "meta.json"
        if not path.is_file():
            return None
        try:
            check_folder(stage_dir)
        except DamagedArtifactError as e:
            log.warning("%s; treated as missing", str(e).split("; ", 1)[0])
            return None
        return read_json(path)


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
    check_folder(d)  # a truncated or corrupt file: one line naming it, not a reader's traceback
    raw = load_npy(d / "items.npy")
    path = d / "pca.safetensors"
    try:
        tensors = load_file(str(path))
        return ItemVectors(
            raw=raw,
            global_pca=tensors["global"],
            local_pca=(tensors[f"local.{domains[0]}"], tensors[f"local.{domains[1]}"]),
        )
    except KeyError as e:
        raise damaged(path, f"no tensor {e}") from None
    except SafetensorError as e:
        raise damaged(path, e) from None


def load_profile_embeddings(ws: Workspace) -> np.ndarray:
    d = ws.profile_dir
    if not (d / "meta.json").is_file():
        raise ArtifactError(f"{d}: no user profiles; run `llm4cdsr profile` first")
    check_folder(d)
    return load_npy(d / "embeddings.npy")
