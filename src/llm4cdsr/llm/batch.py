"""Model calls through batch files: requests written as JSONL in the OpenAI batch format, results
read back into the call cache.

OpenAI's Batch API (half the price of live calls) and vLLM's offline runner
(`python -m vllm.entrypoints.openai.run_batch -i requests.jsonl -o results.jsonl --model M`) read
one request per line,

    {"custom_id": "<cache key, hex>", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

and write one result per line, `{"custom_id": ..., "response": {"status_code": 200, "body": {...}},
"error": null}`. The `custom_id` is the request's key in the call cache (cache.make_key of the
namespace the live backend uses and the request's cache text), so a result goes into the cache
under exactly the key a live run looks up: after the import, `llm4cdsr profile` (or `embed`)
finds every answer there and sends nothing. The body is the one the live client sends. Nothing
else is needed to import a result, and an import can be repeated or continued (it only adds
entries). Embedding requests carry one text each, so that each result maps to one cache key.
No API key is ever written: the batch files hold prompts and texts only.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from llm4cdsr.io import write_json
from llm4cdsr.llm.cache import Cache, make_keys, namespace
from llm4cdsr.llm.chat import CachedChat, ChatRequest

log = logging.getLogger(__name__)

CHAT_URL = "/v1/chat/completions"
EMBEDDINGS_URL = "/v1/embeddings"
# OpenAI's limits per batch input file: 50,000 requests and 200 MB.
MAX_SHARD_REQUESTS = 50_000
MAX_SHARD_MB = 200.0
REQUESTS_PREFIX = "requests-"


class BatchError(ValueError):
    """The batch files or the config do not allow the operation; the message says why."""


# ----- request bodies: what the live clients send ---------------------------------------------
def chat_identity_openai(prof: dict) -> tuple[bytes, dict]:
    """(cache namespace, the fixed part of every request body) of the openai chat backend.

    Must agree with OpenAIChat (its namespace and complete_one's payload); a test checks both.
    """
    if prof["backend"] != "openai":
        raise BatchError(f"batch files are OpenAI requests: they need profile.backend=openai (got {prof['backend']!r}; "
                         "a vLLM server speaks the same protocol)")
    if not prof["chat_model"]:
        raise BatchError("batch files need the model name: profile.chat_model")
    params = {"temperature": float(prof["temperature"]), "seed": prof["seed"]}
    body = {"model": prof["chat_model"], "temperature": float(prof["temperature"])}
    if prof["seed"] is not None:
        body["seed"] = prof["seed"]
    return namespace(kind="chat", backend="openai", model=prof["chat_model"], params=params), body


def chat_body(fixed: dict, request: ChatRequest) -> dict:
    return {"model": fixed["model"], "messages": request.as_messages(), "max_tokens": request.max_tokens,
            **{k: v for k, v in fixed.items() if k != "model"}}


def embedding_identity_openai(emb: dict, stage: str) -> tuple[bytes, dict]:
    """(cache namespace, fixed request body) of the openai embedding backend (as OpenAIEmbedder)."""
    if emb["backend"] != "openai":
        raise BatchError(f"{stage}: batch files are OpenAI requests: embeddings through them need embed.backend=openai "
                         f"(got {emb['backend']!r})")
    if not emb["model"]:
        raise BatchError(f"{stage}: batch files need the model name: embed.model")
    dims = int(emb["dimensions"])
    body: dict = {"model": emb["model"], "encoding_format": "float"}
    if dims:
        body["dimensions"] = dims
    return namespace(kind="embedding", backend="openai", model=emb["model"], params={"dimensions": dims} if dims else {}), body


# ----- writing --------------------------------------------------------------------------------
def write_requests(folder: Path, url: str, requests: Iterable[tuple[str, dict]], manifest: dict,
                   shard_requests: int = MAX_SHARD_REQUESTS, shard_mb: float = MAX_SHARD_MB) -> dict:
    """Write (custom_id, body) pairs as `folder/requests-00000.jsonl`, ... of at most
    `shard_requests` lines and `shard_mb` MB each, and `folder/manifest.json`. Request files an
    earlier write left in `folder` are replaced (they held these calls or calls since answered)."""
    if shard_requests < 1 or shard_mb <= 0:
        raise BatchError("shards need at least one request and a positive size")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{REQUESTS_PREFIX}*.jsonl"):
        old.unlink()
    limit = int(shard_mb * 1024 * 1024)
    shards: list[dict] = []
    out = None
    n = size = 0
    try:
        for custom_id, body in requests:
            line = (json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body},
                               ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            if out is None or n >= shard_requests or (n and size + len(line) > limit):
                if out is not None:
                    out.close()
                    shards[-1].update(requests=n, bytes=size)
                name = f"{REQUESTS_PREFIX}{len(shards):05d}.jsonl"
                shards.append({"file": name})
                out = open(folder / name, "wb")
                n = size = 0
            out.write(line)
            n += 1
            size += len(line)
    finally:
        if out is not None:
            out.close()
            shards[-1].update(requests=n, bytes=size)
    manifest = {**manifest, "url": url, "requests": sum(s["requests"] for s in shards), "shards": shards,
                "results": "put the result files (any other *.jsonl name) in this folder, then --read-batch"}
    write_json(folder / "manifest.json", manifest)
    return manifest


# ----- reading --------------------------------------------------------------------------------
@dataclass
class ImportReport:
    chats: int = 0
    embeddings: int = 0
    already_cached: int = 0
    failed: int = 0  # results with an error or a status other than 200 (their requests stay missing)
    malformed: int = 0  # lines that are no result of ours (cut short, wrong shape)
    files: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"files": self.files, "chat_replies_imported": self.chats, "embeddings_imported": self.embeddings,
                "already_cached": self.already_cached, "failed_requests": self.failed, "malformed_lines": self.malformed,
                "errors": dict(sorted(self.errors.items()))}


def _result_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.jsonl") if not p.name.startswith(REQUESTS_PREFIX))


def _chat_content(body: Any) -> str:
    content = body["choices"][0]["message"]["content"]
    if content is None:  # as the live client: an empty reply, which the reply checks then catch
        return ""
    if not isinstance(content, str):
        raise TypeError("content is not a string")
    return content


def _embedding(body: Any) -> np.ndarray:
    rows = body["data"]
    if len(rows) != 1:
        raise ValueError(f"{len(rows)} embeddings for one text")
    vector = np.asarray(rows[0]["embedding"], dtype=np.float32)
    if vector.ndim != 1 or not np.isfinite(vector).all():
        raise ValueError("not one finite vector")
    return vector


def import_results(folder: Path, cache: Cache, flush_every: int = 5000) -> ImportReport:
    """Read every result file under `folder` (every *.jsonl but the request files) into `cache`.

    Chat replies and embeddings are told apart by the body (`choices` or `data`). Failed requests
    and lines that cannot be ours are counted, not fatal: a later --write-batch writes the calls
    still missing. Entries already in the cache are left as they are.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BatchError(f"{folder}: no such folder")
    report = ImportReport()
    chats: list[tuple[bytes, str]] = []
    vectors: list[tuple[bytes, np.ndarray]] = []

    def flush() -> None:
        if chats:
            have = cache.get_texts([k for k, _ in chats])
            report.already_cached += len(have)
            new = [(k, t) for k, t in chats if k not in have]
            cache.put_texts(new)
            report.chats += len(new)
            chats.clear()
        if vectors:
            have = cache.get_vector_bytes([k for k, _ in vectors])
            report.already_cached += len(have)
            new = [(k, v) for k, v in vectors if k not in have]
            for dim in {v.shape[0] for _, v in new}:  # put_vectors takes one matrix per width
                rows = [(k, v) for k, v in new if v.shape[0] == dim]
                cache.put_vectors([k for k, _ in rows], np.stack([v for _, v in rows]))
            report.embeddings += len(new)
            vectors.clear()

    for path in _result_files(folder):
        report.files.append(str(path.relative_to(folder)))
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = bytes.fromhex(row["custom_id"])
                    if len(key) != 32:
                        raise ValueError("custom_id is not a cache key")
                except (ValueError, KeyError, TypeError):
                    report.malformed += 1
                    continue
                response, error = row.get("response"), row.get("error")
                status = (response or {}).get("status_code")
                if error or status != 200:
                    report.failed += 1
                    code = (error or {}).get("code") if isinstance(error, dict) else None
                    reason = str(code or (f"HTTP {status}" if status else "error"))
                    report.errors[reason] = report.errors.get(reason, 0) + 1
                    continue
                body = response.get("body")
                try:
                    if isinstance(body, dict) and "choices" in body:
                        chats.append((key, _chat_content(body)))
                    elif isinstance(body, dict) and "data" in body:
                        vectors.append((key, _embedding(body)))
                    else:
                        raise ValueError("body is neither a chat completion nor an embedding list")
                except (KeyError, IndexError, TypeError, ValueError):
                    report.malformed += 1
                    continue
                if len(chats) + len(vectors) >= flush_every:
                    flush()
    flush()
    log.info("batch: imported %d chat replies and %d embeddings from %d files in %s (%d failed, %d malformed)",
             report.chats, report.embeddings, len(report.files), folder, report.failed, report.malformed)
    return report


# ----- the stages' calls, as pending batch work -------------------------------------------------
class PendingCalls(Exception):
    """A stage needs calls the cache cannot answer yet: `requests` (unique, in the stage's order)."""

    def __init__(self, round_name: str, keys: list[bytes], requests: list[Any]):
        super().__init__(f"{len(requests)} calls of round {round_name!r} are not cached")
        self.round_name = round_name
        self.keys = keys
        self.requests = requests


@dataclass(frozen=True)
class _Identity:
    backend: str
    model: str
    params: dict


class BatchChat(CachedChat):
    """A CachedChat that answers only from the cache: the first round with a missing call raises
    PendingCalls with that round's missing requests, so a stage run through it stops exactly where
    a live run would start calling, and lists what to send."""

    def __init__(self, ns: bytes, cache: Cache, stage: str = "profile"):
        ident = json.loads(ns)
        super().__init__(_Identity(ident["backend"], ident["model"], ident["params"]), cache, stage, progress=False)
        self.ns = ns

    def complete(self, requests: list[ChatRequest], desc: str = "chat") -> list[str]:
        keys = self.keys(requests)
        found = self.cache.get_texts(keys)
        missing: dict[bytes, ChatRequest] = {}
        for k, r in zip(keys, requests):
            if k not in found and k not in missing:
                missing[k] = r
        if missing:
            raise PendingCalls(desc.replace(" (retry)", "-retry"), list(missing), list(missing.values()))
        return [found[k] for k in keys]


def missing_texts(ns: bytes, texts: list[str], cache: Cache) -> tuple[list[bytes], list[str]]:
    """Unique texts whose embedding the cache lacks, with their keys."""
    keys = make_keys(ns, texts)
    found = cache.get_vector_bytes(keys)
    missing: dict[bytes, str] = {}
    for k, t in zip(keys, texts):
        if k not in found and k not in missing:
            missing[k] = t
    return list(missing), list(missing.values())
