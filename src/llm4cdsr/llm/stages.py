"""The `embed` and `profile` stages: re-runnable, resumable, and honest about their inputs.

Each stage's meta.json records the models, a hash of the config keys that change its output,
and a fingerprint of the dataset (profiles also record the embeddings they were built on). A stage
whose recorded inputs match is skipped; one whose inputs changed is rebuilt whole, in a temporary
folder that replaces the old one in a single rename, so old and new are never mixed. The model
calls themselves go through the cache as they finish: an interrupted stage, run again, asks the
model only for what it had not yet received.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

from llm4cdsr import __version__
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.io import atomic_dir, read_json, save_npy, stable_hash, write_json
from llm4cdsr.llm.batch import (
    CHAT_URL,
    EMBEDDINGS_URL,
    MAX_SHARD_MB,
    MAX_SHARD_REQUESTS,
    BatchChat,
    BatchError,
    PendingCalls,
    chat_body,
    chat_identity_openai,
    embedding_identity_openai,
    import_results,
    missing_texts,
    write_requests,
)
from llm4cdsr.llm.cache import Cache, make_keys, namespace
from llm4cdsr.llm.chat import CachedChat, chat_identity, make_chat_backend
from llm4cdsr.llm.embedders import CachedEmbedder, make_raw_embedder
from llm4cdsr.llm.pca import pca_tables
from llm4cdsr.llm.profiling import (
    ClusterGroups,
    TemplatePieces,
    analyzer_request,
    cluster_items,
    group_by_cluster,
    llm_profiles,
    template_pieces,
    template_profiles,
)
from llm4cdsr.llm.texts import item_texts
from llm4cdsr.locks import folder_lock
from llm4cdsr.workspace import ArtifactError, Workspace, profile_dir

log = logging.getLogger(__name__)

__all__ = ["run_embed", "run_profile", "embed_is_current", "profile_is_current", "make_embedder", "item_texts",
           "profile_dir", "dry_run_profile", "embed_config_hash", "profile_config_hash", "write_embed_batch",
           "write_profile_batch", "read_batch"]

# Keys that change how a stage runs but not what it makes: left out of the config hash.
_EMBED_RUNTIME_KEYS = {"base_url", "api_key_env", "batch_size", "concurrency", "timeout_s", "max_retries", "backoff_s",
                       "backoff_max_s"}
_PROFILE_RUNTIME_KEYS = {"base_url", "api_key_env", "concurrency", "local_batch_size", "local_threads", "timeout_s",
                         "max_retries",
                         "backoff_s", "backoff_max_s"}
# With the template backend no chat setting matters; a changed prompt must not rebuild it.
_PROFILE_LLM_KEYS = {"chat_model", "temperature", "analyzer_words", "summarizer_words", "length_slack",
                     "analyzer_system", "analyzer_prompt", "summarizer_system", "summarizer_prompt", "retry_note"}


# ----- fingerprints -----------------------------------------------------------------------
# The keys of a dataset's meta.json that decide what its arrays mean. The rest records how it was
# made (the engine that read it, the config echo, the prepare report, the input paths, the pipeline
# version): those change with the package while the dataset stays the same, and must not make the
# item embeddings and profiles made from it stale.
_MEANING_KEYS = ("format_version", "domains", "n_items", "n_users", "time_kind", "time_unit", "synthetic")
_DATASET_FILES = ("meta.json", "items.parquet", "seq_offsets.npy", "seq_items.npy")


def dataset_fingerprint(dataset_dir: Path) -> str:
    """SHA-256 of what decides texts, ids and histories: the item table's values (not its file's bytes,
    which depend on the parquet writer), the sequences, and meta.json's _MEANING_KEYS."""
    dataset_dir = Path(dataset_dir)
    _require_dataset_files(dataset_dir)
    meta = read_json(dataset_dir / "meta.json")
    h = hashlib.sha256(json.dumps({k: meta.get(k) for k in _MEANING_KEYS}, sort_keys=True).encode())
    items = pd.read_parquet(dataset_dir / "items.parquet")
    h.update(json.dumps(list(items.columns)).encode())
    h.update(pd.util.hash_pandas_object(items, index=False).to_numpy().tobytes())
    for name in ("seq_offsets.npy", "seq_items.npy"):
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.load(dataset_dir / name, allow_pickle=False)).tobytes())
    return h.hexdigest()[:16]


def legacy_dataset_fingerprint(dataset_dir: Path) -> str:
    """The fingerprint artifacts recorded before dataset_fingerprint's: the files' bytes, meta.json whole."""
    dataset_dir = Path(dataset_dir)
    _require_dataset_files(dataset_dir)
    h = hashlib.sha256()
    for name in _DATASET_FILES:
        h.update(name.encode())
        with open(dataset_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def made_from(recorded: str | None, dataset_dir: Path) -> bool:
    """True when an artifact that recorded dataset fingerprint `recorded` was made from this dataset
    (under today's fingerprint, or the legacy one an older version recorded)."""
    # The legacy one (a second read of every file) only where today's does not match.
    return recorded is not None and (recorded == dataset_fingerprint(dataset_dir)
                                     or recorded == legacy_dataset_fingerprint(dataset_dir))


def _require_dataset_files(dataset_dir: Path) -> None:
    for name in _DATASET_FILES:
        if not (dataset_dir / name).is_file():
            raise ArtifactError(f"{dataset_dir}: missing {name}; run `llm4cdsr prepare` first")


def embed_config_hash(cfg: dict) -> str:
    # No seed: the embeddings and the exact PCA are the same whatever the run seed, so runs with
    # another seed share them.
    emb = {k: v for k, v in cfg["embed"].items() if k not in _EMBED_RUNTIME_KEYS}
    return stable_hash({"embed": emb})


def profile_config_hash(cfg: dict) -> str:
    prof = {k: v for k, v in cfg["profile"].items() if k not in _PROFILE_RUNTIME_KEYS}
    if prof["backend"] == "template":
        prof = {k: v for k, v in prof.items() if k not in _PROFILE_LLM_KEYS}
    # Whole-text vectors hash as before the key existed, so workspaces made then stay current;
    # LLM-written profiles are always embedded whole.
    if prof.get("template_vectors", "text") == "text" or prof["backend"] != "template":
        prof.pop("template_vectors", None)
    return stable_hash({"profile": prof})  # profile.seed is in it; the run seed is not


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----- embeddings -------------------------------------------------------------------------
def make_embedder(cfg: dict, stage: str = "embed", progress: bool = True) -> CachedEmbedder:
    """The configured embedder behind the workspace cache. `.embed(texts)` -> (n, D) float32.

    For texts outside the stages too (`recommend`: unseen items, profile display). Close it with
    `.cache.close()` or use it in a `with` block on `.cache`.
    """
    cache = Cache(Workspace(cfg["workspace"]).cache_path)
    return CachedEmbedder(make_raw_embedder(cfg, stage), cache, stage, progress)


def embed_is_current(cfg: dict) -> bool:
    ws = Workspace(cfg["workspace"])
    meta = ws.meta(ws.embed_dir)
    if not meta or not all((ws.embed_dir / f).is_file() for f in ("items.npy", "pca.safetensors", "texts.parquet")):
        return False
    return (meta.get("config_hash") == embed_config_hash(cfg)
            and made_from(meta.get("dataset_fingerprint"), ws.dataset_dir))


def run_embed(cfg: dict, force: bool = False) -> dict:
    """Embed every item, fit the PCA views, write `<workspace>/embeddings/`. Returns its meta."""
    ws = Workspace(cfg["workspace"])
    if not force and embed_is_current(cfg):
        log.info("embed: %s is current (config %s); nothing to do", ws.embed_dir, embed_config_hash(cfg))
        return read_json(ws.embed_dir / "meta.json")
    with folder_lock(ws.embed_dir):
        if not force and embed_is_current(cfg):  # another process may have just made it
            return read_json(ws.embed_dir / "meta.json")
        return _build_embeddings(cfg, ws)


def _build_embeddings(cfg: dict, ws: Workspace) -> dict:
    t0 = time.perf_counter()
    ds = PreparedDataset.load(ws.dataset_dir)
    fingerprint = dataset_fingerprint(ws.dataset_dir)
    texts = item_texts(ds.items, cfg)
    embedder = make_embedder(cfg, "embed")
    try:
        vectors = embedder.embed(texts, desc="embed: items")
    finally:
        embedder.cache.close()
    t_embed = time.perf_counter() - t0
    raw = np.zeros((len(texts) + 1, vectors.shape[1]), dtype=np.float32)
    raw[1:] = vectors
    emb = cfg["embed"]
    tensors, pca_summary = pca_tables(raw, ds.n_items, ds.domains, emb["global_dim"], emb["local_dim"], seed=0)
    meta: dict[str, Any] = {
        "stage": "embed",
        "llm4cdsr_version": __version__,
        "created": _now(),
        "backend": embedder.inner.backend,
        "model": embedder.inner.model,
        "base_url": emb["base_url"] if embedder.inner.backend == "openai" else None,
        "dim": int(raw.shape[1]),
        "n_items": int(len(texts)),
        "domains": list(ds.domains),
        "pca": pca_summary,
        "config_hash": embed_config_hash(cfg),
        "dataset_fingerprint": fingerprint,
        "model_calls": embedder.calls,
        "cache_hits": embedder.cache_hits,
        "time_s": {"embed": round(t_embed, 2), "total": round(time.perf_counter() - t0, 2)},
    }
    with atomic_dir(ws.embed_dir) as tmp:
        pd.DataFrame({"global_id": ds.items["global_id"].to_numpy(), "domain": ds.items["domain"].astype(str).to_numpy(),
                      "text": texts}).to_parquet(tmp / "texts.parquet", index=False)
        save_npy(tmp / "items.npy", raw)
        # safetensors.numpy writes an array's buffer as it lies in memory: a Fortran-ordered array
        # (sklearn's components_) would come back transposed-scrambled. Make every one C-ordered.
        # One metadata entry: safetensors writes a map of several in hash order, which made the
        # bytes of identical builds differ.
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / "pca.safetensors"),
                  metadata={"llm4cdsr": json.dumps({"model": meta["model"], "config_hash": meta["config_hash"]}, sort_keys=True)})
        meta["time_s"]["total"] = round(time.perf_counter() - t0, 2)
        write_json(tmp / "meta.json", meta)  # last: its presence marks a complete folder
    log.info("embed: wrote %s: %d items x %d (%s), global %d-d, local %d-d, %.1f s (%d model calls, %d cached)",
             ws.embed_dir, len(texts), raw.shape[1], meta["model"], pca_summary["global"]["dim"], emb["local_dim"],
             meta["time_s"]["total"], embedder.calls, embedder.cache_hits)
    return meta


# ----- profiles ---------------------------------------------------------------------------
def _profile_inputs(cfg: dict) -> dict:
    """What the profiles are made from: recorded in meta.json and compared by profile_is_current."""
    ws = Workspace(cfg["workspace"])
    embed_meta = ws.meta(ws.embed_dir) or {}
    return {
        "config_hash": profile_config_hash(cfg),
        "embed_config_hash": embed_meta.get("config_hash"),
        "dataset_fingerprint": embed_meta.get("dataset_fingerprint"),
    }


def profile_is_current(cfg: dict) -> bool:
    if not embed_is_current(cfg):
        return False
    out = profile_dir(cfg)
    meta_path = out / "meta.json"
    if not meta_path.is_file() or not all((out / f).is_file() for f in ("profiles.parquet", "embeddings.npy")):
        return False
    meta = read_json(meta_path)
    return all(meta.get(k) == v for k, v in _profile_inputs(cfg).items())


def _select_users(n_users: int, max_users: int, seed: int) -> np.ndarray:
    if max_users <= 0 or max_users >= n_users:
        return np.arange(n_users, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_users, size=max_users, replace=False)).astype(np.int64)


def _user_clusters(cfg: dict) -> tuple[PreparedDataset, np.ndarray, np.ndarray, ClusterGroups, np.ndarray]:
    ws = Workspace(cfg["workspace"])
    ds = PreparedDataset.load(ws.dataset_dir)
    raw = np.load(ws.embed_dir / "items.npy", allow_pickle=False)
    labels = cluster_items(raw[1:], cfg["profile"]["n_clusters"], cfg["profile"]["seed"])
    split = ds.split()  # training histories only: validation and test targets never reach a profile
    users = _select_users(ds.n_users, cfg["profile"]["max_users"], cfg["profile"]["seed"])
    groups = group_by_cluster(split.train_items, split.train_offsets, users, labels)
    titles = np.concatenate([[""], ds.items["title"].astype(str).to_numpy()])  # index = global id
    return ds, labels, users, groups, titles


def dry_run_profile(cfg: dict) -> dict:
    """Chat calls and tokens a profile run would spend, before anything is spent."""
    prof = cfg["profile"]
    if not embed_is_current(cfg):
        ws = Workspace(cfg["workspace"])
        ds = PreparedDataset.load(ws.dataset_dir)
        n_users = ds.n_users if prof["max_users"] <= 0 else min(prof["max_users"], ds.n_users)
        return {"embeddings": "missing or stale: `embed` runs first", "users": n_users,
                "chat_calls_upper_bound": 0 if prof["backend"] == "template" else n_users * (prof["n_clusters"] + 1) * 2}
    ds, labels, users, groups, titles = _user_clusters(cfg)
    clusters = groups.user_clusters()
    n_pairs = len(groups.user)
    out: dict[str, Any] = {"backend": prof["backend"], "users": int(len(users)), "user_cluster_pairs": n_pairs}
    if prof["backend"] == "template":
        out.update(chat_calls=0, estimated_tokens=0)
        return out
    requests = [analyzer_request(ids, titles, prof) for uc in clusters for _, ids in uc.clusters]
    backend, model, params = chat_identity(cfg)
    cache = Cache(Workspace(cfg["workspace"]).cache_path)
    try:
        keys = make_keys(namespace(kind="chat", backend=backend, model=model, params=params),
                         [r.cache_text() for r in requests])
        cached = cache.get_texts(keys)
    finally:
        cache.close()
    todo = {k: r for k, r in zip(keys, requests) if k not in cached}  # distinct prompts still to send
    n_summaries = int(sum(1 for uc in clusters if uc.clusters))
    # Tokens: ~4 characters per token in; the reply budget out (an upper bound). The summarizer's
    # input is the analyzer statements, at most analyzer_words * slack words each.
    summary_in = sum(len(uc.clusters) for uc in clusters if uc.clusters) * prof["analyzer_words"] * 1.4 * prof["length_slack"]
    summary_in += n_summaries * (len(prof["summarizer_prompt"]) + len(prof["summarizer_system"])) / 4
    out.update(
        chat_model=model,
        analyzer_calls=len(requests),
        analyzer_calls_cached=int(sum(1 for k in keys if k in cached)),
        analyzer_calls_to_make=len(todo),  # users with the same recent titles in a cluster share one call
        summarizer_calls_at_most=n_summaries,
        retries_at_most="one per bad reply",
        estimated_prompt_tokens=int(sum(r.prompt_chars() for r in todo.values()) / 4 + summary_in),
        estimated_completion_tokens_at_most=int(sum(r.max_tokens for r in todo.values())
                                                + n_summaries * (prof["summarizer_words"] * prof["length_slack"] * 1.4 + 16)),
    )
    return out


def run_profile(cfg: dict, force: bool = False) -> dict:
    """Build user profiles and their embeddings into `<workspace>/<profile.output>/`. Returns its meta."""
    out_dir = profile_dir(cfg)
    if not force and profile_is_current(cfg):
        log.info("profile: %s is current (config %s); nothing to do", out_dir, profile_config_hash(cfg))
        return read_json(out_dir / "meta.json")
    # Profiles are built on the item embeddings: bring those up to date first. Checked here, not
    # left to run_embed, whose "is current" line right after `embed: wrote ...` read as a contradiction.
    if not embed_is_current(cfg):
        run_embed(cfg)
    with folder_lock(out_dir):
        if not force and profile_is_current(cfg):  # another process may have just made it
            return read_json(out_dir / "meta.json")
        return _build_profiles(cfg, out_dir)


def _build_profiles(cfg: dict, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    prof = cfg["profile"]
    ds, labels, users, groups, titles = _user_clusters(cfg)
    t_cluster = time.perf_counter() - t0
    report: dict[str, Any] = {"backend": prof["backend"], "users": int(len(users)),
                              "user_cluster_pairs": int(len(groups.user))}
    ws = Workspace(cfg["workspace"])
    chat_name = None
    if prof["backend"] == "template":
        texts = template_profiles(groups, titles, prof)
        sources = ["template"] * len(users)
        report["chat_calls"] = 0
    else:
        cache = Cache(ws.cache_path)
        try:
            chat = CachedChat(make_chat_backend(cfg, "profile"), cache, "profile")
            chat_name = chat.name
            texts, sources, call_report = llm_profiles(groups.user_clusters(), titles, chat, prof)
        finally:
            cache.close()
        report.update(call_report)
        report["chat_calls"] = chat.calls
        report["chat_cache_hits"] = chat.cache_hits
    pieces: TemplatePieces | None = None
    if prof["backend"] == "template" and prof.get("template_vectors", "text") == "pieces":
        pieces = template_pieces(groups, titles, prof)
    t_text = time.perf_counter() - t0 - t_cluster
    embedder = make_embedder(cfg, "profile")
    try:
        if pieces is None:
            vectors = embedder.embed(texts, desc="profile: embedding")
        else:  # each distinct title and keyword once, through the same cache (resumable as the texts are)
            vectors = pieces.pool(embedder.embed(pieces.texts, desc="profile: embedding titles and keywords"))
    finally:
        embedder.cache.close()
    counts = pd.Series(sources).value_counts().to_dict()
    report.update(
        sources={k: int(v) for k, v in sorted(counts.items())},
        fallback_users=int(counts.get("fallback", 0)),
        embedding_calls=embedder.calls,
        embedding_cache_hits=embedder.cache_hits,
        mean_text_chars=round(float(np.mean([len(t) for t in texts])) if texts else 0.0, 1),
        vectors="whole texts" if pieces is None else "pieces (titles and keywords, character-weighted mean)",
        embedded_texts=len(set(texts)) if pieces is None else len(pieces.texts),  # distinct
        time_s={"cluster": round(t_cluster, 2), "texts": round(t_text, 2),
                "embed": round(time.perf_counter() - t0 - t_cluster - t_text, 2)},
    )
    embed_meta = ws.meta(ws.embed_dir) or {}
    meta = {
        "stage": "profile",
        "llm4cdsr_version": __version__,
        "created": _now(),
        "backend": prof["backend"],
        "source": "template (no LLM)" if prof["backend"] == "template" else "llm",
        "chat_model": chat_name,
        "base_url": prof["base_url"] if prof["backend"] == "openai" else None,
        "embed_model": embed_meta.get("model"),
        "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
        "n_users": int(len(users)),
        "subsample": bool(prof["max_users"] and len(users) < ds.n_users),
        "n_clusters": int(labels.max() + 1),
        **_profile_inputs(cfg),
    }
    with atomic_dir(out_dir) as tmp:
        pd.DataFrame({"user_idx": users, "text": texts, "source": sources}).to_parquet(tmp / "profiles.parquet",
                                                                                     index=False)
        save_npy(tmp / "embeddings.npy", vectors.astype(np.float32))
        save_npy(tmp / "clusters.npy", labels)
        report["time_s"]["total"] = round(time.perf_counter() - t0, 2)
        write_json(tmp / "report.json", report)
        write_json(tmp / "meta.json", meta)  # last: its presence marks a complete folder
    log.info("profile: wrote %s: %d users (%s), %d chat calls, %.1f s", out_dir, len(users),
             ", ".join(f"{k} {v}" for k, v in report["sources"].items()), report["chat_calls"], report["time_s"]["total"])
    return meta


# ----- batch files --------------------------------------------------------------------------
def _embedding_requests(fixed: dict, keys: list[bytes], texts: list[str]):
    # One text per request, as a list (what the live client sends): one result, one cache key.
    return ((k.hex(), {**fixed, "input": [t]}) for k, t in zip(keys, texts))


def _batch_manifest(cfg: dict, stage: str, round_name: str, kind: str, model: str) -> dict:
    return {"stage": stage, "round": round_name, "kind": kind, "model": model, "created": _now(),
            "llm4cdsr_version": __version__, "workspace": str(Path(cfg["workspace"]).resolve())}


def write_embed_batch(cfg: dict, folder: str | Path, shard_requests: int = MAX_SHARD_REQUESTS,
                      shard_mb: float = MAX_SHARD_MB) -> dict:
    """The item embeddings the cache lacks, as batch request files in `folder/item-embeddings/`.
    Returns what was written ({"round": None, ...} when nothing is missing)."""
    ws = Workspace(cfg["workspace"])
    ns, fixed = embedding_identity_openai(cfg["embed"], "embed")
    texts = item_texts(PreparedDataset.load(ws.dataset_dir).items, cfg)
    with Cache(ws.cache_path) as cache:
        keys, missing = missing_texts(ns, texts, cache)
    if not missing:
        return {"round": None, "requests": 0, "next": "every item embedding is cached: `llm4cdsr embed` makes no call"}
    manifest = write_requests(Path(folder) / "item-embeddings", EMBEDDINGS_URL, _embedding_requests(fixed, keys, missing),
                              _batch_manifest(cfg, "embed", "item-embeddings", "embedding", fixed["model"]),
                              shard_requests, shard_mb)
    return {**manifest, "folder": str(Path(folder) / "item-embeddings")}


def write_profile_batch(cfg: dict, folder: str | Path, shard_requests: int = MAX_SHARD_REQUESTS,
                        shard_mb: float = MAX_SHARD_MB) -> dict:
    """The profile stage's next round of calls the cache lacks, as batch request files in
    `folder/<round>/`: the cluster analyses (analyzer), their retries, the summaries (summarizer,
    built from the imported analyses), their retries, then the profile texts' embeddings when
    embed.backend is openai. Each round needs the one before it imported (`read_batch`); the stage
    is run up to the first call the cache cannot answer, so the requests are those a live run
    would send, checks and retries included."""
    if not embed_is_current(cfg):
        raise BatchError("profile: the item embeddings are missing or stale (profiles are clustered on them): "
                         "run `llm4cdsr embed` first (or its --write-batch and --read-batch)")
    prof = cfg["profile"]
    ns, fixed = chat_identity_openai(prof)
    _, _, _, groups, titles = _user_clusters(cfg)
    ws = Workspace(cfg["workspace"])
    with Cache(ws.cache_path) as cache:
        try:
            texts, _, _ = llm_profiles(groups.user_clusters(), titles, BatchChat(ns, cache), prof)
        except PendingCalls as pending:
            out = Path(folder) / pending.round_name
            manifest = write_requests(out, CHAT_URL, ((k.hex(), chat_body(fixed, r)) for k, r in
                                                      zip(pending.keys, pending.requests)),
                                      _batch_manifest(cfg, "profile", pending.round_name, "chat", fixed["model"]),
                                      shard_requests, shard_mb)
            return {**manifest, "folder": str(out)}
        if cfg["embed"]["backend"] != "openai":
            return {"round": None, "requests": 0,
                    "next": f"every chat call is cached: `llm4cdsr profile` makes none (it embeds the profiles with "
                            f"embed.backend={cfg['embed']['backend']})"}
        ens, efixed = embedding_identity_openai(cfg["embed"], "profile")
        keys, missing = missing_texts(ens, texts, cache)
    if not missing:
        return {"round": None, "requests": 0, "next": "every call is cached: `llm4cdsr profile` makes none"}
    out = Path(folder) / "profile-embeddings"
    manifest = write_requests(out, EMBEDDINGS_URL, _embedding_requests(efixed, keys, missing),
                              _batch_manifest(cfg, "profile", "profile-embeddings", "embedding", efixed["model"]),
                              shard_requests, shard_mb)
    return {**manifest, "folder": str(out)}


def read_batch(cfg: dict, folder: str | Path) -> dict:
    """Import every batch result file under `folder` into the workspace's call cache."""
    with Cache(Workspace(cfg["workspace"]).cache_path) as cache:
        return import_results(Path(folder), cache).as_dict()
