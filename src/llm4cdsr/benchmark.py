"""`llm4cdsr benchmark`: every model and ablation on one config, with one budget, several seeds and
the tables that make the comparison trustworthy.

    bench = Benchmark(config="food-kitchen", workspace=Path("workspace-food-kitchen"), archive=Path("bench/runs"))
    summary = run_benchmark(bench, ["llm4cdsr", "sasrec_mixed"], [42, 43, 44], out=Path("bench"), jobs=2, threads=1)

A variant is a label with overrides of the config (the first may be "CONFIG=<preset>": another
preset) and a display name; the built-in ones are the package's models and ablations (MODELS,
ABLATIONS), a YAML file adds more (`load_variants`). Every (variant, seed) runs as
`llm4cdsr run -c CONFIG -w WORKSPACE <its overrides>` in one shared workspace, so every model is
scored on the same saved sampled candidates and trained on the same LLM artifacts, which are made
once before any training (they take no run seed: the seeds vary training only). Runs train `jobs` at
a time, each on `threads` torch threads; a finished run is not trained again and an interrupted one
resumes from its checkpoint; a run that fails is reported and the others go on.

Each finished run's config, results, per-user test ranks and training log are copied to the archive
(default <out>/runs): the workspace does not survive a change of machine, and the tables (t-tests
included) are rebuilt from the workspace's runs and, for those it lacks, from the archived ones. A
run made under another config than its variant gets now (a changed preset or default) is stale: it
is left out of the tables and trained again (a stale workspace folder is moved aside first, to
runs/<name>.stale-<n>).

Tuning (`tune`): for each variant, a coordinate search over a small grid (TUNE_GRID) on validation
only, one seed, early stopping as configured; the chosen point is recorded in <out>/tuning.json
and used for the seeded runs, named <variant>-tuned-seed<seed>.
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Callable, Iterable

import matplotlib
import numpy as np
import pandas as pd
import yaml

from llm4cdsr.config import ConfigError, load_config
from llm4cdsr.data.dataset import SYNTHETIC_NOTE
from llm4cdsr.io import read_json, stable_hash, write_json
from llm4cdsr.models import model_needs
from llm4cdsr.training.metrics import paired_tests, parse_metric
from llm4cdsr.training.run import made_with, resumes_as_is

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402

# The package's models, each under the objective it measured best with on Food x Kitchen (the
# config's, unless named). label -> overrides of the config.
MODELS: dict[str, list[str]] = {
    "llm4cdsr": [],
    "sasrec_mixed": ["model.name=sasrec_mixed"],
    "sasrec_mixed_llm": ["model.name=sasrec_mixed_llm"],
    "sasrec_single": ["model.name=sasrec_single"],
    "gru4rec": ["model.name=gru4rec"],
    # C2DSR's full softmax over a large domain is many times a SASRec step on a CPU: the sampled one.
    "c2dsr-sampled_ce": ["model.name=c2dsr", "model.dropout=0.2", "model.c2dsr_objective=train"],
    "tri_cdr": ["model.name=tri_cdr", "model.dropout=0.2"],
    "pop": ["model.name=pop"],
}
# LLM4CDSR with one part switched off or swapped ("FLIP_*": the opposite of the config's value).
ABLATIONS: dict[str, list[str]] = {
    "ablation-id_global": ["model.global_item=id"],
    "ablation-random_local": ["model.local_init=random"],
    "ablation-alpha0": ["model.alpha=0"],
    "ablation-beta": ["FLIP_BETA"],
    "ablation-freeze_local_flipped": ["FLIP_FREEZE"],
}
# How each built-in variant is named in the tables ({...}: filled from the config, see display_names).
NAMES: dict[str, str] = {
    "llm4cdsr": "LLM4CDSR",
    "sasrec_mixed": "SASRec, mixed sequence, ID embeddings",
    "sasrec_mixed_llm": "SASRec, mixed sequence, adapted LLM vectors",
    "sasrec_single": "SASRec, one per domain",
    "gru4rec": "GRU4Rec, mixed sequence",
    "c2dsr-sampled_ce": "C2DSR, the sampled softmax (its paper: the full softmax)",
    "tri_cdr": "Tri-CDR",
    "pop": "popularity",
    "ablation-id_global": "ablation: ID embeddings in the global branch",
    "ablation-random_local": "ablation: random init of the local tables",
    "ablation-alpha0": "ablation: alpha = 0 (no item regularisation)",
    "ablation-beta": "ablation: beta = {beta} (config: {preset_beta})",
    "ablation-freeze_local_flipped": "ablation: local tables {flipped} (config: {preset})",
}
# --models names that stand for several variants.
GROUPS = {"models": list(MODELS), "ablations": list(ABLATIONS)}

# The tuning grid, searched one key at a time in this order from the config's own point: each value
# of a key is tried with the other keys at their best so far, on validation (the config's
# train.valid_metric and train.valid_mode) of one seed, with the config's early stopping; a tie keeps
# the earlier point. From a point on the grid that is 1 + 2 + 1 + 1 + 1 = 6 runs per model. The full
# softmax (ce) is left out: on a large domain an epoch costs several times a sampled one on a CPU.
TUNE_GRID: dict[str, list] = {
    "train.lr": [0.0005, 0.001, 0.002],
    "model.dropout": [0.2, 0.5],
    "train.weight_decay": [0.0, 0.0005],
    "train.loss": ["sampled_ce", "bce"],
}
TUNING_FILE = "tuning.json"
TUNED = "-tuned"  # run names of the seeded runs of a tuned variant: <label>-tuned-seed<seed>

# What of a finished run the tables need (config, test metrics, per-user ranks for the t-tests) and
# its training log (the validation curve).
ARCHIVED = ("config.yaml", "results.json", "train.log")
# Of ranks.parquet, the columns the t-tests read.
ARCHIVED_RANKS = ["user_idx", "rank_sampled", "rank_full"]
LLM_STAGES = ("prepare", "embed", "profile")


class BenchmarkError(ValueError):
    """A benchmark request that cannot run (an unknown variant, a malformed variants file or grid)."""


def load_variants(path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """User variants from YAML: `label: [overrides]`, or `label: {name: display name, overrides: [...]}`.
    Returns (variants, display names)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a mapping label -> [overrides] or label -> {{name, overrides}}")
    variants, names = {}, {}
    for label, spec in data.items():
        label = str(label)
        if not label or "/" in label or label.startswith("."):
            raise BenchmarkError(f"{path}: {label!r} is not usable as a run folder name")
        if isinstance(spec, dict):
            unknown = set(spec) - {"name", "overrides"}
            if unknown:
                raise BenchmarkError(f"{path}: {label}: unknown keys {sorted(unknown)} (name, overrides)")
            names[label] = str(spec.get("name") or label)
            spec = spec.get("overrides") or []
        if not isinstance(spec, list) or not all(isinstance(o, str) for o in spec):
            raise BenchmarkError(f"{path}: {label}: overrides must be a list of KEY=VALUE strings")
        variants[label] = list(spec)
        names.setdefault(label, label)
    return variants, names


def parse_grid(specs: Iterable[str]) -> dict[str, list]:
    """`KEY=V1,V2,...` (each value read as in an override) -> a tuning grid; every key and value is
    checked against the defaults."""
    grid = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise BenchmarkError(f"--grid {spec!r}: expected KEY=V1,V2,... (e.g. train.lr=0.0005,0.001)")
        try:
            grid[key] = [_get(load_config([], [f"{key}={v}"]), key) for v in values.split(",")]
        except (ConfigError, KeyError, TypeError) as e:
            raise BenchmarkError(f"--grid {spec!r}: {e}") from e
    return grid


@dataclass
class Outcome:
    """What became of one (variant, seed): trained, finished (already, nothing to do), failed."""
    label: str
    seed: int
    status: str
    seconds: float = 0.0
    rc: int = 0
    log: Path | None = None
    message: str = ""
    run: str = ""  # the run folder's name


@dataclass
class Benchmark:
    """One comparison: a config, a workspace, an archive and the variants it knows."""
    config: str | None
    workspace: Path
    archive: Path | None = None
    variants: dict[str, list[str]] = field(default_factory=lambda: {**MODELS, **ABLATIONS})
    names: dict[str, str] = field(default_factory=lambda: dict(NAMES))
    # Variants that start from other variants' runs of the same seed (model.init_from): those must be
    # finished in the workspace (weights are not archived), so they are trained first where missing.
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    epochs: int | None = None            # train.epochs of every run (None: the config's)
    overrides: list[str] = field(default_factory=list)  # for every run, before the variant's own
    retrain_archived: bool = False
    stages: tuple[str, ...] = ("prepare", "embed", "profile", "train")
    cwd: Path | None = None              # where `llm4cdsr run` runs (relative paths of the config)
    tuned: dict[str, dict] = field(default_factory=dict)  # label -> tuning.json entry (point, overrides)
    archived_files: tuple[str, ...] = ARCHIVED
    echo: Callable[[str], None] = field(default=lambda s: print(s, flush=True))

    def __post_init__(self):
        self.workspace = Path(self.workspace)
        self.archive = Path(self.archive) if self.archive else None

    # -- what a run is -------------------------------------------------------------------------
    def run_name(self, label: str, seed: int) -> str:
        return f"{label}{TUNED if label in self.tuned else ''}-seed{seed}"

    def resolve_overrides(self, label: str) -> tuple[str | None, list[str]]:
        """(config, overrides) of a variant; the FLIP_* entries become the opposite of the config's value."""
        if label not in self.variants:
            raise BenchmarkError(f"unknown variant {label!r}; known: {', '.join(self.variants)}")
        config, overrides = self.config, list(self.variants[label])
        if overrides and overrides[0].startswith("CONFIG="):
            config = overrides.pop(0).split("=", 1)[1]
        if "FLIP_FREEZE" in overrides or "FLIP_BETA" in overrides:
            model = self.load(config, [])["model"]
            flips = {"FLIP_FREEZE": f"model.freeze_local={'false' if model['freeze_local'] else 'true'}",
                     "FLIP_BETA": f"model.beta={0 if model['beta'] > 0 else 1}"}
            overrides = [flips.get(o, o) for o in overrides]
        return config, overrides

    def run_arguments(self, label: str, seed: int, name: str | None = None,
                      extra: Iterable[str] = ()) -> tuple[str | None, list[str]]:
        """(config, overrides) that `llm4cdsr run` gets for (label, seed), apart from threads and stages."""
        config, overrides = self.resolve_overrides(label)
        epochs = [f"train.epochs={self.epochs}"] if self.epochs else []
        tuned = self.tuned.get(label, {}).get("overrides", [])
        return config, [f"seed={seed}", *epochs, "train.progress=false", f"run.name={name or self.run_name(label, seed)}",
                        *self.overrides, *(o.replace("{seed}", str(seed)) for o in overrides), *tuned, *extra]

    def load(self, config: str | None, overrides: list[str]) -> dict:
        return load_config([config] if config else [], [f"workspace={self.workspace}", *overrides])

    def run_config(self, label: str, seed: int) -> dict:
        return self.load(*self.run_arguments(label, seed))

    def is_current(self, run_dir: Path, label: str, seed: int) -> bool:
        """The run in `run_dir` was made with the config (label, seed) gets today: a preset or a default
        that changed since makes an archived run stale (a key added since, at its default, does not)."""
        return resumes_as_is(run_dir, self.run_config(label, seed))

    def display_names(self) -> dict[str, str]:
        """Display names, with {flipped}/{preset} (local tables) and {beta}/{preset_beta} filled from the config."""
        model = self.load(self.config, [])["model"]
        states = ("frozen, as in the authors' code", "learned")
        flipped, preset = (states[1], states[0]) if model["freeze_local"] else states
        values = {"flipped": flipped, "preset": preset, "beta": 0 if model["beta"] > 0 else 1, "preset_beta": model["beta"]}
        out = {}
        for label in self.variants:
            name = self.names.get(label, label)
            try:
                out[label] = name.format(**values) if "{" in name else name
            except (KeyError, IndexError, ValueError):
                out[label] = name
        return out

    # -- the workspace and the archive -----------------------------------------------------------
    def workspace_run(self, label: str, seed: int) -> Path:
        return self.workspace / "runs" / self.run_name(label, seed)

    def done_files(self, label: str) -> tuple[str, ...]:
        """Files a run folder holds once (label, seed) needs nothing more (after_run's too)."""
        return ("results.json",)

    def after_run(self, label: str, run_dir: Path, log) -> int:
        """Work after a finished training run (a hook: e.g. rescoring); returns an exit status."""
        return 0

    def set_aside_stale(self, label: str, seed: int) -> Path | None:
        """A workspace run of (label, seed) made with another config than it gets now (a changed preset or
        default) cannot be continued: it is moved to <name>.stale-<n> beside it (kept, not deleted), so
        that the run can be made again under its name. Returns where it went."""
        return set_aside(self.workspace_run(label, seed), self.run_config(label, seed), label, self.echo)

    def archive_run(self, run_dir: Path) -> None:
        """Copy a finished run's table inputs to archive/<run name>/, replacing an older copy whole;
        nothing to do when the copy is as new as the run's results (or there is no archive)."""
        if self.archive is None:
            return
        results, target = run_dir / "results.json", self.archive / run_dir.name
        copy = target / "results.json"
        if not results.is_file() or (copy.is_file() and copy.stat().st_mtime >= results.stat().st_mtime):
            return
        tmp = self.archive / f".{run_dir.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in self.archived_files:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, tmp / name)
        ranks = pd.read_parquet(run_dir / "ranks.parquet", columns=ARCHIVED_RANKS)
        ranks.to_parquet(tmp / "ranks.parquet", index=False, compression="zstd")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)

    def finished_run(self, label: str, seed: int, needs: str = "results.json") -> Path | None:
        """The run folder of (label, seed): the workspace's, else the archived copy, else None; a copy
        made with another config than (label, seed) gets today is stale and not used."""
        roots = [self.workspace / "runs"] + ([self.archive] if self.archive else [])
        for root in roots:
            run_dir = root / self.run_name(label, seed)
            if (run_dir / needs).is_file():
                if self.is_current(run_dir, label, seed):
                    return run_dir
                self.echo(f"{run_dir}: made with another config than {label} gets now; left out")
        return None

    def run_dir_named(self, name: str) -> Path:
        """The workspace's run folder of that name, else the archive's copy (a tuning point read from a
        finished seeded run that only the archive holds), else the workspace's (to be made)."""
        run_dir = self.workspace / "runs" / name
        if not run_dir.is_dir() and self.archive is not None and (self.archive / name).is_dir():
            return self.archive / name
        return run_dir

    def copy_tuning_run(self, label: str, seed: int) -> bool:
        """A tuned variant's seeded run at the tuning seed is one of its tuning runs under another name
        (the same config): that run is copied to the seeded name instead of being trained again."""
        tried = self.tuned.get(label, {}).get("tried", [])
        target = self.workspace_run(label, seed)
        if not tried or target.exists():
            return False
        same = equivalent_run([self.run_dir_named(t["run"]) for t in tried if t.get("run")], self.run_config(label, seed))
        if same is None:
            return False
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(same, tmp)
        tmp.rename(target)
        self.echo(f"{target.name}: the tuning run {same.name} is this very run (same config and seed); copied")
        return True

    def finished_in_workspace(self, label: str, seed: int) -> bool:
        run_dir = self.workspace_run(label, seed)
        return all((run_dir / f).is_file() for f in self.done_files(label)) and self.is_current(run_dir, label, seed)

    def runs_to_train(self, labels: list[str], seeds: list[int]) -> list[tuple[str, int]]:
        """(label, seed) pairs to hand to `llm4cdsr run`, seed by seed: all but those only the archive
        holds (a run finished in the workspace is listed too: it is skipped when it is run)."""
        def archived_only(label: str, seed: int) -> bool:
            if self.archive is None:
                return False
            archived = self.archive / self.run_name(label, seed)
            return ((archived / "results.json").is_file() and not self.workspace_run(label, seed).is_dir()
                    and self.is_current(archived, label, seed))

        return [(label, seed) for seed in seeds for label in labels if self.retrain_archived or not archived_only(label, seed)]

    def missing_needs(self, todo: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The runs that the variants of `todo` start from (needs) and the workspace lacks with weights
        (an archived copy has none): to train before them."""
        def usable(label: str, seed: int) -> bool:
            run_dir = self.workspace_run(label, seed)
            files = all((run_dir / f).is_file() for f in ("results.json", "model.safetensors"))
            return files and self.is_current(run_dir, label, seed)

        needed = dict.fromkeys((need, seed) for label, seed in todo for need in self.needs.get(label, ()))
        return [(label, seed) for label, seed in needed if not usable(label, seed)]

    # -- running -------------------------------------------------------------------------------
    def command(self, label: str, seed: int, threads: int, stages: Iterable[str], name: str | None = None,
                extra: Iterable[str] = ()) -> list[str]:
        config, overrides = self.run_arguments(label, seed, name, extra)
        return [sys.executable, "-m", "llm4cdsr", "run", *(["-c", config] if config else []), "-w", str(self.workspace),
                f"train.num_threads={threads}", f"run.stages=[{','.join(stages)}]", *overrides]

    def run_one(self, label: str, seed: int, threads: int, stages: Iterable[str] = ("train",), name: str | None = None,
                extra: Iterable[str] = ()) -> Outcome:
        """One `llm4cdsr run` of (label, seed) (or of the run `name` with `extra` overrides), its output
        appended to <workspace>/logs/<run name>.log; a finished training run is archived."""
        stages = list(stages)
        name = name or self.run_name(label, seed)
        log = self.workspace / "logs" / f"{name}.log"
        started = time.perf_counter()
        try:
            if "train" in stages:
                config, overrides = self.run_arguments(label, seed, name, extra)
                set_aside(self.workspace / "runs" / name, self.load(config, overrides), label, self.echo)
            cmd = self.command(label, seed, threads, stages, name, extra)
        except (ConfigError, BenchmarkError, OSError) as e:
            return Outcome(label, seed, "failed", rc=2, message=str(e), run=name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            rc = subprocess.call(cmd, cwd=self.cwd, stdout=f, stderr=subprocess.STDOUT)
            run_dir = self.workspace / "runs" / name
            if rc == 0 and "train" in stages and not extra:
                rc = self.after_run(label, run_dir, f)
        if rc == 0 and "train" in stages and not extra:
            self.archive_run(run_dir)
        status = "trained" if rc == 0 else "failed"
        return Outcome(label, seed, status, time.perf_counter() - started, rc, log, "" if rc == 0 else _last_line(log), name)

    def artifact_runs(self, labels: list[str], seed: int) -> list[list[str]]:
        """The variants by set of data and LLM settings, those reading most of the artifacts first
        (profiles imply item vectors): the first of a set whose run of the LLM stages succeeds makes what
        every variant of that set reads."""
        groups: dict[str, list[tuple[int, int, str]]] = {}
        for i, label in enumerate(labels):
            try:
                cfg = self.run_config(label, seed)
            except (ConfigError, BenchmarkError):
                continue  # reported when the variant runs
            key = stable_hash([cfg.get("data"), cfg.get("embed"), cfg.get("profile"), self.resolve_overrides(label)[0]])
            needs = model_needs(cfg["model"])
            groups.setdefault(key, []).append((-(2 if "profiles" in needs else len(needs)), i, label))
        return [[label for _, _, label in sorted(members)] for members in groups.values()]


def equivalent_run(candidates: Iterable[Path], cfg: dict) -> Path | None:
    """The first of `candidates` that is a finished run of `cfg` (its display keys and run name aside)."""
    for run_dir in candidates:
        if (run_dir / "results.json").is_file() and resumes_as_is(run_dir, cfg):
            return run_dir
    return None


def set_aside(run_dir: Path, cfg: dict, label: str, echo: Callable[[str], None]) -> Path | None:
    """Move a run folder made with another config than `cfg` to <name>.stale-<n> beside it."""
    if not (run_dir / "config.yaml").is_file() or resumes_as_is(run_dir, cfg):
        return None
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.stale-{n}")).exists():
        n += 1
    # The same config with nothing to continue from: stopped before its first checkpoint.
    why = ("stopped before its first epoch ended" if made_with(run_dir, cfg) else f"made with another config than {label} gets now")
    run_dir.rename(aside)
    echo(f"{run_dir}: {why}; moved to {aside.name}")
    return aside


def _last_line(log: Path) -> str:
    """The last non-empty line of a log: most often the error."""
    try:
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


class Progress:
    """Runs done / total and an ETA from the runs that trained so far, one line per finished run."""

    def __init__(self, total: int, jobs: int, echo: Callable[[str], None]):
        self.total, self.jobs, self.echo = total, max(jobs, 1), echo
        self.done = 0
        self.trained_seconds: list[float] = []
        self.started = time.perf_counter()
        self.lock = threading.Lock()

    def report(self, o: Outcome) -> None:
        with self.lock:
            self.done += 1
            if o.status == "trained":
                self.trained_seconds.append(o.seconds)
            left = self.total - self.done
            eta = ""
            if left and self.trained_seconds:
                eta = f", ETA {_duration(np.mean(self.trained_seconds) * left / self.jobs)}"
            detail = {"trained": f"trained in {_duration(o.seconds)}", "finished": "already finished",
                      "failed": f"FAILED (exit {o.rc}){': ' + o.message if o.message else ''}; log: {o.log}"}[o.status]
            self.echo(f"[{self.done}/{self.total}] {o.run or f'{o.label} seed {o.seed}'}: {detail}; "
                      f"{left} left{eta} (elapsed {_duration(time.perf_counter() - self.started)})")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _pool(items: list, fn: Callable, jobs: int, progress: Progress) -> list[Outcome]:
    """fn(*item) for every item, `jobs` at a time, reported as each ends; the outcomes in `items`' order."""
    with ThreadPoolExecutor(max(jobs, 1)) as pool:
        futures = [pool.submit(fn, *item) for item in items]
        for future in as_completed(futures):
            progress.report(future.result())
    return [future.result() for future in futures]


def threads_per_job(jobs: int, threads: int) -> int:
    """Torch threads per run: `threads`, or the machine's cores shared by the jobs (0). One thread per
    job: OpenMP threads of several processes fighting over few cores are far slower."""
    return threads or max((os.cpu_count() or 1) // max(jobs, 1), 1)


def make_artifacts(bench: Benchmark, labels: list[str], seed: int) -> list[Outcome]:
    """The data and LLM artifacts, made once before any training (so no two jobs build them at once);
    a variant whose run of them fails (e.g. a bad override) hands over to the next of its set. Returns
    the failed sets' last outcome (empty: every set made)."""
    stages = [s for s in bench.stages if s in LLM_STAGES]
    failed = []
    for candidates in (bench.artifact_runs(labels, seed) if stages else []):
        for label in candidates:
            o = bench.run_one(label, seed, os.cpu_count() or 1, stages)
            verdict = "ok" if o.rc == 0 else f"FAILED: {o.message}"
            bench.echo(f"data and LLM artifacts ({label}): {verdict}, {_duration(o.seconds)}")
            if o.rc == 0:
                break
        else:
            failed.append(o)
    return failed


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def text(self) -> str:
        counts = {s: sum(o.status == s for o in self.outcomes) for s in ("trained", "finished", "failed")}
        lines = [f"benchmark: {len(self.outcomes)} runs: {counts['trained']} trained, {counts['finished']} already finished, "
                 f"{counts['failed']} failed"]
        lines += [f"  failed: {o.label} seed {o.seed} (exit {o.rc}){': ' + o.message if o.message else ''}"
                  f"{f'; log: {o.log}' if o.log else ''}" for o in self.failed]
        lines += [f"  {p}" for p in self.tables]
        return "\n".join(lines)


def train_all(bench: Benchmark, labels: list[str], seeds: list[int], jobs: int = 1, threads: int = 0,
              artifacts_made: bool = False) -> list[Outcome]:
    """Train every (label, seed) not finished yet: the data and LLM artifacts first, then what others
    start from, then the rest, `jobs` at a time. A failing run is reported; the others go on."""
    threads = threads_per_job(jobs, threads)
    outcomes: list[Outcome] = []
    todo = bench.runs_to_train(labels, seeds)
    if not todo:
        return outcomes
    train_stages = [s for s in bench.stages if s not in LLM_STAGES]
    if all(bench.finished_in_workspace(label, seed) for label, seed in todo):
        pending = []
    else:
        pending = todo
        pending_labels = [label for label in labels if any(t[0] == label for t in todo)]
        artifacts = [] if artifacts_made else make_artifacts(bench, pending_labels, seeds[0])
        if artifacts:
            return [Outcome(label, seed, "failed", rc=1, message="the data and LLM artifacts could not be made")
                                for label, seed in todo]
    first = bench.missing_needs(pending)
    rest = [t for t in todo if t not in first]
    progress = Progress(len(first) + len(rest), jobs, bench.echo)

    def one(label: str, seed: int) -> Outcome:
        if bench.copy_tuning_run(label, seed) or bench.finished_in_workspace(label, seed):
            bench.archive_run(bench.workspace_run(label, seed))
            return Outcome(label, seed, "finished", run=bench.run_name(label, seed))
        return bench.run_one(label, seed, threads, train_stages)

    for phase in (first, rest):
        outcomes += _pool(phase, one, jobs, progress)
    return outcomes


# -- tuning --------------------------------------------------------------------------------------

def validation_score(valid: dict, metric: str, mode: str) -> float:
    """The figure a tuning point is chosen by: overall `metric` in `mode` of results["valid"] (the best
    epoch's validation). It is handed nothing but the validation block."""
    return float(valid[mode]["overall"][metric])


def choose_point(tried: list[tuple[dict, float]]) -> dict:
    """The point with the best validation score; a tie keeps the earlier point. `tried`: (point,
    validation score) in the order they were proposed; no test figure ever reaches this function."""
    best = max(range(len(tried)), key=lambda i: (tried[i][1], -i))
    return tried[best][0]


def coordinate_search(start: dict, grid: dict[str, list],
                      score: Callable[[list[dict]], list[float | None]]) -> tuple[dict, list[tuple[dict, float | None]]]:
    """One key of `grid` at a time, in order: each of its values with the other keys at their best so
    far; `score` gets the points of one key (to train in parallel) and returns their validation scores.
    Returns (chosen point, every (point, score) tried)."""
    current, seen = dict(start), {}
    for key, values in grid.items():
        points = [dict(current, **{key: v}) for v in dict.fromkeys([current[key], *values])]
        new = [p for p in points if _point_key(p) not in seen]
        for p, s in zip(new, score(new) if new else []):
            seen[_point_key(p)] = (p, s)
        candidates = [(p, seen[_point_key(p)][1]) for p in points if seen[_point_key(p)][1] is not None]
        if candidates:
            current = choose_point(candidates)
    return current, [v for v in seen.values()]


def _has(cfg: dict, key: str) -> bool:
    try:
        _get(cfg, key)
        return True
    except (KeyError, TypeError):
        return False


def _point_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def _get(cfg: dict, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def point_overrides(point: dict) -> list[str]:
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in point.items()]


def point_text(point: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]} {v}" for k, v in point.items())


def tune_grid_for(cfg: dict, grid: dict[str, list]) -> dict[str, list]:
    """The keys of `grid` that change what this model learns: none for popularity; C2DSR under its
    own full softmax (c2dsr_objective=ce) ignores train.loss."""
    model = cfg["model"]
    if model["name"] == "pop":
        return {}
    if model["name"] == "c2dsr" and model.get("c2dsr_objective") == "ce":
        return {k: v for k, v in grid.items() if k != "train.loss"}
    return dict(grid)


def tuning_base_hash(bench: Benchmark, label: str, seed: int) -> str:
    """What a variant's tuning depends on: its resolved config at the tuning seed, untuned, apart from
    the keys that do not change what a run learns."""
    saved = bench.tuned.pop(label, None)
    try:
        cfg = bench.run_config(label, seed)
    finally:
        if saved is not None:
            bench.tuned[label] = saved
    cfg = {k: v for k, v in cfg.items() if k not in ("workspace", "run")}
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in ("progress", "num_threads", "tensorboard")}
    return stable_hash(cfg)


def tune(bench: Benchmark, labels: list[str], seed: int, grid: dict[str, list], jobs: int = 1, threads: int = 0,
         previous: dict | None = None) -> dict:
    """Choose each variant's point of `grid` on validation (coordinate_search), training one seed
    under run names tune-<label>-<point>; an entry of `previous` (a tuning.json) made for the same
    grid, seed and config is used as it is. Sets bench.tuned and returns the tuning.json record."""
    threads = threads_per_job(jobs, threads)
    record = {"seed": seed, "grid": grid, "search": "one key at a time, in the grid's order, from the config's point; "
              "chosen by the config's train.valid_metric on train.valid_mode of the validation split (results['valid'], "
              "the best epoch's); a tie keeps the earlier point", "variants": {}}
    previous = previous or {}
    old = previous.get("variants", {}) if previous.get("grid") == grid and previous.get("seed") == seed else {}
    for label in labels:
        bench.tuned.pop(label, None)
        try:
            cfg = bench.run_config(label, seed)
        except (ConfigError, BenchmarkError) as e:
            bench.echo(f"tune {label}: not tuned: {e}")  # its seeded runs fail and are reported
            continue
        missing = [k for k in grid if not _has(cfg, k)]
        if missing:
            raise BenchmarkError(f"tuning grid: no such config keys: {', '.join(missing)}")
        own = tune_grid_for(cfg, grid)
        if not own:
            bench.echo(f"tune {label}: nothing to tune ({cfg['model']['name']} learns no weights of these keys)")
            continue
        base = tuning_base_hash(bench, label, seed)
        if label in old and old[label].get("config") == base:
            record["variants"][label] = old[label]
            bench.tuned[label] = old[label]
            bench.echo(f"tune {label}: recorded point {point_text(old[label]['point'])}")
            continue
        metric, mode = cfg["train"]["valid_metric"], cfg["train"]["valid_mode"]
        start = {k: _get(cfg, k) for k in own}
        progress = Progress(0, jobs, bench.echo)
        runs: dict[str, str] = {}

        def score(points: list[dict]) -> list[float | None]:
            names = [f"tune-{label}-" + "-".join(f"{k.split('.')[-1]}{v}" for k, v in p.items()) for p in points]
            progress.total += len(points)
            todo = [(p, n) for p, n in zip(points, names)]

            def one(p: dict, name: str) -> Outcome:
                config, overrides = bench.run_arguments(label, seed, name, point_overrides(p))
                # The config's own point is the variant's plain seeded run: a finished one is that
                # very training (run names aside), so it is read instead of trained again.
                plain = [bench.workspace_run(label, seed)]
                if bench.archive is not None:
                    plain.append(bench.archive / plain[0].name)
                same = equivalent_run([bench.workspace / "runs" / name, *plain], bench.load(config, overrides))
                if same is not None:
                    return Outcome(label, seed, "finished", run=same.name)
                return bench.run_one(label, seed, threads, ["train"], name, point_overrides(p))

            outcomes = _pool(todo, one, jobs, progress)
            scores = []
            for (p, _), outcome in zip(todo, outcomes):
                name = outcome.run
                runs[_point_key(p)] = name
                results = bench.run_dir_named(name) / "results.json"
                # The validation block alone leaves this file: the test block is never read.
                scores.append(validation_score(read_json(results)["valid"], metric, mode) if results.is_file() else None)
            return scores

        chosen, tried = coordinate_search(start, own, score)
        entry = {"config": base, "metric": f"{metric} ({mode}, validation)", "start": start, "point": chosen,
                 "overrides": point_overrides(chosen),
                 "tried": [{"point": p, "valid": s, "run": runs[_point_key(p)]} for p, s in tried]}
        if all(s is None for _, s in tried):
            bench.echo(f"tune {label}: every tuning run failed; its seeded runs use the config's point")
            continue
        record["variants"][label] = entry
        bench.tuned[label] = entry
        best = max(s for _, s in tried if s is not None)
        bench.echo(f"tune {label}: chose {point_text(chosen)} (validation {metric} {best:.4f}, "
                   f"{len(tried)} points)")
    return record


def read_tuning(*folders: Path | None) -> dict | None:
    for folder in folders:
        if folder is not None and (folder / TUNING_FILE).is_file():
            return read_json(folder / TUNING_FILE)
    return None


# -- tables --------------------------------------------------------------------------------------

def finished_groups(bench: Benchmark, labels: list[str], seeds: list[int]) -> dict[str, list[Path]]:
    """label -> its finished, current run folders (workspace first, else archive), in label order;
    workspace runs not archived yet are archived first."""
    groups = {}
    for label in labels:
        for s in seeds:
            bench.archive_run(bench.workspace_run(label, s))
        found = [run for s in seeds if (run := bench.finished_run(label, s)) is not None]
        if found:
            groups[label] = found
    return groups


def group_blocks(domains: list[str]) -> list[tuple[str, str]]:
    """(block key, column text): overall, each target domain, users with one domain in their history
    and users with both."""
    return [("overall", "overall"), *((d, d) for d in domains), ("one", "one-domain users"), ("both", "both-domain users")]


def _block(test_mode: dict, block: str) -> dict:
    if block in ("one", "both"):
        return test_mode.get("groups", {}).get("domains_in_history", {}).get(block, {})
    return test_mode.get(block, {})


def per_run_frame(groups: dict[str, list[Path]], metrics: list[str]) -> pd.DataFrame:
    """One row per (variant, run, protocol, block, metric): the test figure."""
    rows = []
    for label, runs in groups.items():
        for run in runs:
            results = read_json(run / "results.json")
            domains = results["dataset"]["domains"]
            for mode in ("sampled", "full"):
                for block, _ in group_blocks(domains):
                    values = _block(results["test"][mode], block)
                    for metric in metrics:
                        rows.append({"variant": label, "seed": results.get("seed"), "run": run.name, "mode": mode,
                                     "block": block, "metric": metric, "value": float(values.get(metric, np.nan))})
    return pd.DataFrame(rows, columns=["variant", "seed", "run", "mode", "block", "metric", "value"])


def summary_frame(groups: dict[str, list[Path]], names: dict[str, str], metric: str, settings: dict[str, str]) -> pd.DataFrame:
    """One row per (variant, protocol, block, metric): runs, mean, std over runs, and for the overall
    t-test metric the difference and p against the reference (the first variant)."""
    _, k = parse_metric(metric)
    metrics = list(dict.fromkeys([f"hit@{k}", metric]))
    runs = per_run_frame(groups, metrics)
    reference = next(iter(groups))
    tests = {mode: paired_tests(groups, reference, metric, mode) for mode in ("sampled", "full")}
    rows = []
    for (label, mode, block, m), part in runs.groupby(["variant", "mode", "block", "metric"], sort=False):
        values = part["value"].to_numpy(dtype=float)
        diff, p = (np.nan, np.nan)
        if block == "overall" and m == metric:
            diff, p = (0.0, np.nan) if label == reference else tests[mode].get(label, (np.nan, np.nan))
        rows.append({"variant": label, "name": names.get(label, label), "setting": settings.get(label, ""),
                     "runs": len(values), "seeds": " ".join(str(s) for s in part["seed"]), "mode": mode, "block": block,
                     "metric": m, "mean": np.nanmean(values) if len(values) else np.nan,
                     "std": np.nanstd(values, ddof=1) if len(values) > 1 else np.nan, "diff": diff, "p": p})
    return pd.DataFrame(rows)


def _cell(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "-"
    return f"{mean:.4f}" if np.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _p(p: float) -> str:
    if np.isnan(p):
        return "-"
    return f"{p:.2g}" if p > 0 else "<1e-300"  # below the smallest float, scipy reports 0


MODE_TEXT = {"sampled": "sampled candidates (each test target among the saved sampled negatives)",
             "full": "full ranking (each test target among every item of its domain)"}


def display_table(summary: pd.DataFrame, mode: str, metric: str, domains: list[str]) -> pd.DataFrame:
    """The table of one protocol: a row per variant; hit and the metric overall, the metric per domain
    and per user group, and the t-test against the reference."""
    _, k = parse_metric(metric)
    part = summary[summary["mode"] == mode]
    tuned = (part["setting"] != "").any()
    rows = []
    for label, rows_of in part.groupby("variant", sort=False):
        cell = {(r.block, r.metric): r for r in rows_of.itertuples()}
        first = rows_of.iloc[0]
        row = {"model": first["name"], "runs": int(first["runs"])}
        if tuned:
            row["setting"] = first["setting"] or "as configured"
        for block, text in group_blocks(domains):
            for m in ([f"hit@{k}", metric] if block == "overall" else [metric]):
                r = cell.get((block, m))
                row[f"{'' if block == 'overall' else text + ' '}{m}"] = _cell(r.mean, r.std) if r is not None else "-"
        r = cell[("overall", metric)]
        row[f"diff {metric}"] = "ref" if label == summary["variant"].iloc[0] else ("-" if np.isnan(r.diff) else f"{r.diff:+.4f}")
        row["p (paired t)"] = _p(r.p)
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    lines = [head, "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def tuning_text(tuning: dict | None) -> str:
    """What the grid was and which point each tuned variant chose (Markdown)."""
    if not tuning or not tuning.get("variants"):
        return ""
    grid = "; ".join(f"{k} in {{{', '.join(str(v) for v in vs)}}}" for k, vs in tuning["grid"].items())
    lines = [f"*Tuned on validation only (seed {tuning['seed']}): grid {grid}; {tuning['search']}.*", ""]
    for label, entry in tuning["variants"].items():
        lines.append(f"- {label}: {point_text(entry['point'])} (from {point_text(entry['start'])}; "
                     f"{len(entry['tried'])} points tried, {entry['metric']})")
    return "\n".join(lines)


def write_tables(bench: Benchmark, labels: list[str], seeds: list[int], out: Path, metric: str = "ndcg@10",
                 tuning: dict | None = None) -> list[Path]:
    """benchmark.md, summary.csv, runs.csv and index.html (tables and bar plots) in `out`, from the
    finished runs (workspace, else archive). Returns the files written (none without a finished run)."""
    parse_metric(metric)
    groups = finished_groups(bench, labels, seeds)
    if not groups:
        bench.echo("no finished runs yet: no tables")
        return []
    names = bench.display_names()
    settings = {label: "tuned: " + point_text(bench.tuned[label]["point"]) for label in groups if label in bench.tuned}
    summary = summary_frame(groups, names, metric, settings)
    first = next(iter(groups))  # the reference of the t-tests
    domains = read_json(groups[first][0] / "results.json")["dataset"]["domains"]
    synthetic = any(read_json(r / "results.json").get("dataset", {}).get("synthetic") for runs in groups.values() for r in runs)
    n_ref = len(groups[first])
    against = names.get(first, first) + (f" (per-user mean over its {n_ref} runs)" if n_ref > 1 else "")
    parts, tables = ([f"**{SYNTHETIC_NOTE}.**"] if synthetic else []), {}
    for mode in ("sampled", "full"):
        tables[mode] = display_table(summary, mode, metric, domains)
        parts.append(f"*Test, {MODE_TEXT[mode]}: mean ± std over seeds; paired t-test of per-user {metric} against {against}*"
                     f"\n\n{_markdown(tables[mode])}")
    if text := tuning_text(tuning):
        parts.append(text)
    out.mkdir(parents=True, exist_ok=True)
    markdown = "\n\n".join(parts) + "\n"
    files = [out / "benchmark.md", out / "summary.csv", out / "runs.csv", out / "index.html"]
    files[0].write_text(markdown, encoding="utf-8")
    summary.to_csv(files[1], index=False, float_format="%.6g")
    per_run_frame(groups, sorted(set(summary["metric"]))).to_csv(files[2], index=False, float_format="%.6g")
    files[3].write_text(_html(tables, summary, metric, domains, against, tuning, synthetic), encoding="utf-8")
    return files


def bar_plot(summary: pd.DataFrame, mode: str, metric: str, domains: list[str]) -> bytes:
    """PNG: the metric of each variant per block (overall, domains, user groups), mean over seeds with
    the std over seeds as error bars."""
    part = summary[(summary["mode"] == mode) & (summary["metric"] == metric)]
    blocks = group_blocks(domains)
    variants = list(dict.fromkeys(part["variant"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(blocks) * max(len(variants), 2)), 4.0 + 0.18 * len(variants)))
    width = 0.8 / max(len(variants), 1)
    for i, label in enumerate(variants):
        rows = part[part["variant"] == label].set_index("block")
        means = [rows["mean"].get(b, np.nan) for b, _ in blocks]
        stds = [0.0 if np.isnan(v := rows["std"].get(b, np.nan)) else v for b, _ in blocks]
        ax.bar(np.arange(len(blocks)) + (i - (len(variants) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=rows["name"].iloc[0])
    ax.set_xticks(np.arange(len(blocks)), [t.replace(" ", "\n") for _, t in blocks])
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{mode}: mean over seeds, error bars: std over seeds")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _html(tables: dict[str, pd.DataFrame], summary: pd.DataFrame, metric: str, domains: list[str], against: str,
          tuning: dict | None, synthetic: bool) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>llm4cdsr benchmark</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}</style></head><body><h1>llm4cdsr benchmark</h1>"]
    if synthetic:
        parts.append(f"<p><b>{SYNTHETIC_NOTE}.</b></p>")
    for mode, table in tables.items():
        png = base64.b64encode(bar_plot(summary, mode, metric, domains)).decode("ascii")
        parts += [f"<h2>Test, {MODE_TEXT[mode]}</h2>",
                  f"<p>Mean ± std over seeds; paired t-test of per-user {metric} against {against}.</p>",
                  table.to_html(index=False, escape=True),
                  f"<p><img alt='{mode} {metric}' src='data:image/png;base64,{png}'></p>"]
    if tuning and tuning.get("variants"):
        grid = "; ".join(f"{k} in {{{', '.join(str(v) for v in vs)}}}" for k, vs in tuning["grid"].items())
        rows = "".join(f"<tr><td>{escape(label)}</td><td>{escape(point_text(e['point']))}</td>"
                       f"<td>{escape(point_text(e['start']))}</td><td>{len(e['tried'])}</td></tr>"
                       for label, e in tuning["variants"].items())
        parts.append(f"<h2>Tuning</h2><p>On validation only (seed {tuning['seed']}): grid {escape(grid)}; "
                     f"{escape(tuning['search'])}.</p>"
                     f"<table><tr><th>variant</th><th>chosen</th><th>from</th><th>points tried</th></tr>{rows}</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# -- the whole benchmark -------------------------------------------------------------------------

def expand_models(spec: str | Iterable[str], known: Iterable[str]) -> list[str]:
    """--models: labels and group names (models, ablations), in order, without repeats."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    labels = []
    for item in (i.strip() for i in items):
        if item:
            labels += GROUPS.get(item, [item])
    labels = list(dict.fromkeys(labels))
    unknown = [label for label in labels if label not in set(known)]
    if unknown:
        raise BenchmarkError(f"unknown variants: {', '.join(unknown)} (known: {', '.join(known)}; groups: {', '.join(GROUPS)})")
    if not labels:
        raise BenchmarkError("no variant to run")
    return labels


def run_benchmark(bench: Benchmark, labels: list[str], seeds: list[int], out: Path, jobs: int = 1, threads: int = 0,
                  tune_grid: dict[str, list] | None = None, table_only: bool = False, metric: str = "ndcg@10") -> Summary:
    """Tune (when a grid is given), train every (label, seed) and write the tables to `out`."""
    parse_metric(metric)
    out = Path(out)
    summary = Summary()
    previous = read_tuning(out, bench.archive)
    if tune_grid is not None and not table_only:
        if make_artifacts(bench, labels, seeds[0]):
            summary.outcomes = [Outcome(label, s, "failed", rc=1, message="the data and LLM artifacts could not be made")
                                for label in labels for s in seeds]
            return summary
        record = tune(bench, labels, seeds[0], tune_grid, jobs, threads, previous)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / TUNING_FILE, record)
        if bench.archive is not None:
            bench.archive.mkdir(parents=True, exist_ok=True)
            write_json(bench.archive / TUNING_FILE, record)
        tuning = record
    elif tune_grid is not None and previous:  # --table-only --tune: the recorded points
        bench.tuned.update({k: v for k, v in previous.get("variants", {}).items() if k in labels})
        tuning = previous
    else:
        tuning = None
    if not table_only:
        summary.outcomes = train_all(bench, labels, seeds, jobs, threads, artifacts_made=tune_grid is not None)
    summary.tables = write_tables(bench, labels, seeds, out, metric, tuning)
    return summary
