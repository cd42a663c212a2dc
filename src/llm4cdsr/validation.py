"""One validation pass over a resolved config, before any command makes a folder.

    validate_config(cfg, command="train")   # raises ConfigError: one line naming each bad key

`load_config` already checks that every key exists and has the right type; this checks values:
ranges (`train.lr > 0`, `model.dropout` in [0, 1)), choices (`model.name`, `train.loss`), and what
keys must agree on (`model.heads` divides `model.hidden`, `model.hidden == embed.local_dim` where
the model reads the local PCA tables). A key absent from the config (one another version adds) is
not checked. Checks that need torch (`model.name`, `device`) run only for commands that train.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from llm4cdsr.config import ENV_NAME, ConfigError, key_transport_problem
from llm4cdsr.workspace import Workspace

STAGES = ("prepare", "embed", "profile", "train", "report")
# Commands that build a model (they import torch anyway).
TRAINING_COMMANDS = ("train", "run", "experiment")
# Commands that may send a configured API key to a server (the embed and profile stages).
KEY_SENDING_COMMANDS = ("embed", "profile", "run", "experiment")
# Commands that write into the workspace.
WRITING_COMMANDS = ("prepare", "embed", "profile", "train", "run", "experiment")

METRICS = ("hit", "ndcg", "mrr")
# The LLM stages' backends (their factories in llm/ accept these names).
EMBED_BACKENDS = ("local", "sentence-transformers", "onnx", "openai")
PROFILE_BACKENDS = ("template", "openai", "local", "local-gguf")


class _Checks:
    """Collects every problem, so one run of the command names them all."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.problems: list[str] = []

    def value(self, key: str) -> tuple[bool, Any]:
        node: Any = self.cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node

    def check(self, key: str, ok: Callable[[Any], bool], allowed: str) -> None:
        present, value = self.value(key)
        if not present:
            return
        try:
            good = ok(value)
        except (TypeError, ValueError):
            good = False
        if not good:
            self.problems.append(f"{key} must be {allowed}, got {value!r}")

    def at_least(self, key: str, low: float, kind: type = int) -> None:
        self.check(key, lambda v: isinstance(v, kind) and not isinstance(v, bool) and v >= low,
                   f"{'an integer' if kind is int else 'a number'} >= {low:g}")

    def above(self, key: str, low: float) -> None:
        self.check(key, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > low, f"a number > {low:g}")

    def one_of(self, key: str, choices) -> None:
        self.check(key, lambda v: v in choices, f"one of {' | '.join(map(str, choices))}")

    def boolean(self, key: str) -> None:
        self.check(key, lambda v: isinstance(v, bool), "true or false")


def _metric(name: Any) -> bool:
    metric, sep, k = str(name).partition("@")
    return bool(sep) and metric in METRICS and k.isdigit() and int(k) >= 1


def _increasing(values: Any) -> bool:
    return (isinstance(values, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            and all(a < b for a, b in zip(values, values[1:])))


def _run_name(name: Any) -> bool:
    """A folder name under runs/: no path separators, not '.' or '..', not hidden (locks live there)."""
    text = str(name)
    return text == "" or ("/" not in text and "\\" not in text and os.sep not in text and not text.startswith(".")
                          and "\0" not in text)


def _uses_local_pca(model: dict) -> bool:
    return model.get("name") == "llm4cdsr" and model.get("local_init") == "pca"


def _workspace_problem(workspace: Any, writes: bool) -> str | None:
    """A workspace that is a file, or lies under one, or cannot be written."""
    path = Path(str(workspace)).expanduser()
    if str(workspace).strip() == "":
        return "workspace must be a folder path, got ''"
    if path.exists() and not path.is_dir():
        return f"workspace {path} is a file, not a folder (--out / --workspace / workspace= names the folder to write)"
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        return f"workspace {path}: {ancestor} is a file, so the folder cannot be made there"
    if writes and ancestor.exists() and not os.access(ancestor, os.W_OK | os.X_OK):
        return f"workspace {path}: {ancestor} is not writable (a read-only folder or file system?)"
    return None


def validate_config(cfg: dict, command: str | None = None) -> dict:
    """Check every value of a resolved config; raise ConfigError naming each bad key and what it
    may be. `command`: the CLI command (None: a Python caller that trains)."""
    c = _Checks(cfg)
    trains = command is None or command in TRAINING_COMMANDS

    # top level
    c.at_least("seed", 0)
    c.check("device", lambda v: v in ("auto", "cpu", "cuda") or (str(v).startswith("cuda:") and str(v)[5:].isdigit()),
            "auto | cpu | cuda | cuda:N")
    if "workspace" in cfg:
        problem = _workspace_problem(cfg["workspace"], command in WRITING_COMMANDS)
        if problem:
            c.problems.append(problem)

    # data
    for key in ("data.min_user", "data.min_item", "data.max_history", "data.douban_min_rating"):
        c.at_least(key, 0)
    c.one_of("data.repeats", ("keep_all", "keep_first", "keep_last"))
    c.one_of("data.time_unit", ("s", "ms"))
    c.check("data.csv_sep", lambda v: isinstance(v, str) and len(v) >= 1, "a non-empty separator")
    c.at_least("data.synth.users", 1)
    c.at_least("data.synth.items_a", 1)
    c.at_least("data.synth.items_b", 1)
    c.check("data.synth.overlap", lambda v: 0.0 <= v <= 1.0, "a share in [0, 1]")
    c.check("data.domains", lambda v: len(v) in (0, 2), "empty or two domain names")

    # embed
    c.one_of("embed.backend", EMBED_BACKENDS)
    for key in ("embed.batch_size", "embed.concurrency", "embed.max_field_chars", "embed.max_chars", "embed.global_dim",
                "embed.local_dim"):
        c.at_least(key, 1)
    c.at_least("embed.dimensions", 0)
    c.at_least("embed.max_retries", 0)
    c.above("embed.timeout_s", 0)
    c.at_least("embed.backoff_s", 0, float)
    c.at_least("embed.backoff_max_s", 0, float)

    # API keys: a NAME, never the key (config.yaml and command.txt keep the name), and sent safely.
    for section in ("embed", "profile"):
        present, name = c.value(f"{section}.api_key_env")
        if present and isinstance(name, str) and name and not ENV_NAME.fullmatch(name):
            # The value is not shown: it is most likely the key itself.
            c.problems.append(f"{section}.api_key_env must be the NAME of an environment variable (letters, digits, _), "
                              f"not the key: export the key as e.g. OPENAI_API_KEY and give that name (value not shown)")
        elif present and isinstance(name, str) and cfg.get(section, {}).get("backend") == "openai" and (
                command in KEY_SENDING_COMMANDS):
            problem = key_transport_problem(str(cfg[section].get("base_url", "")), name, f"{section}.base_url")
            if problem:
                c.problems.append(problem)

    # profile
    c.one_of("profile.backend", PROFILE_BACKENDS)
    c.one_of("profile.template_vectors", ("text", "pieces"))
    for key in ("profile.concurrency", "profile.local_batch_size", "profile.n_clusters", "profile.max_titles",
                "profile.max_title_chars", "profile.analyzer_words", "profile.summarizer_words"):
        c.at_least(key, 1)
    for key in ("profile.local_threads", "profile.template_keywords", "profile.max_users", "profile.seed",
                "profile.max_retries"):
        c.at_least(key, 0)
    c.above("profile.timeout_s", 0)
    c.at_least("profile.temperature", 0, float)
    c.at_least("profile.length_slack", 1, float)
    c.at_least("profile.backoff_s", 0, float)
    c.at_least("profile.backoff_max_s", 0, float)

    # model
    for key in ("model.hidden", "model.blocks", "model.heads", "model.max_len", "model.gru_layers"):
        c.at_least(key, 1)
    c.check("model.dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
    c.boolean("model.causal")
    c.one_of("model.global_item", ("llm", "id"))
    c.one_of("model.local_init", ("pca", "random"))
    c.boolean("model.freeze_local")
    c.at_least("model.alpha", 0, float)
    c.at_least("model.beta", 0, float)
    c.above("model.tau", 0)
    c.above("model.tau_reg", 0)
    c.above("model.align_tau", 0)
    c.one_of("model.align", ("paper", "cosine"))
    c.one_of("model.block", ("prenorm", "authors"))
    c.boolean("model.null_key")
    c.one_of("model.positions", ("first", "last"))
    c.one_of("model.first_local_target", ("keep", "drop"))
    c.one_of("model.empty_local_state", ("zero", "ln_bias"))
    c.check("model.init_from", lambda v: isinstance(v, list) and all(isinstance(s, str) and s.strip() for s in v),
            "a list of run folders")
    model = cfg.get("model", {})
    hidden, heads = model.get("hidden"), model.get("heads")
    if isinstance(hidden, int) and isinstance(heads, int) and hidden >= 1 and heads >= 1 and hidden % heads:
        c.problems.append(f"model.heads must divide model.hidden ({hidden}), got {heads}")

    # train
    for key in ("train.epochs", "train.patience", "train.batch_size", "train.bucket_pool"):
        c.at_least(key, 1)
    c.above("train.lr", 0)
    c.at_least("train.weight_decay", 0, float)
    c.one_of("train.optimizer", ("adam", "adamw"))
    c.at_least("model.local_anchor", 0, float)
    c.at_least("train.num_threads", 0)
    c.check("train.valid_metric", _metric, "hit@K | ndcg@K | mrr@K with K >= 1")
    c.one_of("train.valid_mode", ("sampled", "full"))
    c.one_of("train.loss_norm", ("batch", "epoch"))
    c.one_of("train.loss", ("bce", "ce", "sampled_ce"))
    c.at_least("train.num_negatives", 1)
    c.boolean("train.logq_correction")
    c.boolean("train.chimeric_negatives")
    c.one_of("train.global_negative_domain", ("target", "input"))
    train = cfg.get("train", {})
    chimeric_bce = train.get("loss") == "bce" and train.get("chimeric_negatives") is True
    if train.get("global_negative_domain") == "input" and not chimeric_bce:
        c.problems.append("train.global_negative_domain=input draws the global part of a chimeric negative apart from its "
                          f"local part: it needs train.loss=bce and train.chimeric_negatives=true (got train.loss="
                          f"{train.get('loss')!r}, train.chimeric_negatives={train.get('chimeric_negatives')!r})")

    # eval
    c.at_least("eval.num_negatives", 1)
    c.at_least("eval.candidate_seed", 0)
    c.at_least("eval.batch_size", 1)
    c.check("eval.ks", lambda v: len(v) >= 1 and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in v),
            "a non-empty list of integers >= 1")
    c.check("eval.length_buckets", _increasing, "an increasing list of integers")
    c.check("eval.popularity_buckets", _increasing, "an increasing list of integers")
    c.boolean("eval.chimeric_negatives")

    # run
    c.check("run.name", _run_name, "a plain folder name (no '/' or '\\', not '.', '..' or hidden)")
    c.check("run.stages", lambda v: all(s in STAGES for s in v), f"stages out of {', '.join(STAGES)}")
    c.check("run.force", lambda v: all(s in STAGES for s in v), f"stages out of {', '.join(STAGES)}")
    c.check("run.report_metric", _metric, "hit@K | ndcg@K | mrr@K with K >= 1")
    c.at_least("run.item_map_items", 1)

    if trains:
        _check_training(c, cfg, command)
    if c.problems:
        raise ConfigError("config: " + "; ".join(c.problems))
    return cfg


def _check_training(c: _Checks, cfg: dict, command: str | None) -> None:
    """What only a command that builds a model needs (these import torch)."""
    import torch

    from llm4cdsr.models import MODEL_NAMES

    c.one_of("model.name", MODEL_NAMES)
    c.check("run.baselines", lambda v: all(name in MODEL_NAMES for name in v), f"models out of {', '.join(MODEL_NAMES)}")
    device = str(cfg.get("device", "auto"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        c.problems.append(f"device is {device!r} but this machine has no CUDA device torch can use (device=cpu or auto)")
    elif device.startswith("cuda:") and device[5:].isdigit() and int(device[5:]) >= torch.cuda.device_count():
        c.problems.append(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    model, embed = cfg.get("model", {}), cfg.get("embed", {})
    init_from = model.get("init_from")
    if isinstance(init_from, list) and "workspace" in cfg:
        for entry in init_from:
            if isinstance(entry, str) and entry.strip():
                folder = Workspace(cfg["workspace"]).run_folder(entry)
                if not (folder / "results.json").is_file():
                    c.problems.append(f"model.init_from: {folder} is not a finished run (no results.json)")
    # Guidance reads every user's profile; a sample of them would leave the others without a row.
    max_users = cfg.get("profile", {}).get("max_users", 0)
    beta = model.get("beta", 0)
    if (model.get("name") == "llm4cdsr" and isinstance(beta, (int, float)) and beta > 0 and isinstance(max_users, int)
            and max_users > 0):
        c.problems.append(f"profile.max_users ({max_users}) profiles a sample of the users, but model.beta ({beta:g}) > 0 "
                          "guides every user by their profile: set profile.max_users=0 (every user) or model.beta=0")
    # Where vectors come from the workspace's embed stage, the local tables are its PCA views.
    if command is not None and _uses_local_pca(model) and embed.get("local_dim") != model.get("hidden"):
        c.problems.append(f"embed.local_dim ({embed.get('local_dim')}) must equal model.hidden ({model.get('hidden')}) "
                          "for model.name=llm4cdsr with model.local_init=pca: its local item tables are the per-domain "
                          "PCA vectors")
