"""`prepare`: raw data (any supported format) -> a PreparedDataset in `<workspace>/dataset/`.

Which files and format the `data` section names, reading them with the right importer, deciding
whether the saved dataset is current, and writing it (under the dataset folder's lock). The
filters and the id assignment are `llm4cdsr.data.build`'s (its docstring gives their order).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from llm4cdsr.data import columnar, douban
from llm4cdsr.data.amazon import read_amazon
from llm4cdsr.data.build import PIPELINE_VERSION, build_dataset, default_data_config, prepare_tables
from llm4cdsr.data.dataset import FORMAT_VERSION, DatasetError, PreparedDataset, compute_stats
from llm4cdsr.data.douban import read_douban
from llm4cdsr.data.errors import DataError
from llm4cdsr.data.raw import RawData, from_tables, read_tables
from llm4cdsr.data.recbole import read_recbole
from llm4cdsr.data.synth import generate_world, synth_params
from llm4cdsr.io import stable_hash
from llm4cdsr.locks import folder_lock
from llm4cdsr.workspace import Workspace

__all__ = ["INPUT_KEYS", "PIPELINE_VERSION", "build_dataset", "workspace_data_config", "dataset_stats", "default_data_config", "format_stats", "is_current",
           "load_raw", "prepare_tables", "resolve_inputs", "run_prepare"]

log = logging.getLogger(__name__)

SYNTH_MARKER = "synth.json"


def dataset_stats(ds: PreparedDataset) -> dict[str, Any]:
    """compute_stats plus what prepare reports beyond it (empty titles, duplicate rows dropped)."""
    stats = compute_stats(ds)
    stats["empty_titles"] = int((ds.items["title"].astype(str).str.strip() == "").sum())
    stats["duplicate_rows_dropped"] = int(ds.meta.get("prepare_report", {}).get("duplicate_rows_dropped", 0))
    return stats


def format_stats(stats: dict[str, Any]) -> str:
    a, b = list(stats["items"])
    h = stats["history_length"]
    lines = [
        f"users          {stats['users']:,}",
        f"items          {a} {stats['items'][a]:,} + {b} {stats['items'][b]:,} = {stats['items'][a] + stats['items'][b]:,}",
        f"interactions   {a} {stats['interactions'][a]:,} + {b} {stats['interactions'][b]:,} = "
        f"{stats['interactions'][a] + stats['interactions'][b]:,}",
        f"overlap users  {stats['overlap_users']:,} ({stats['overlap_ratio']:.1%}); only {a} {stats['users_only'][a]:,}, only {b} {stats['users_only'][b]:,}",
        f"history length min {h['min']}, mean {h['mean']:.2f}, max {h['max']}",
        f"empty titles   {stats.get('empty_titles', 0):,}",
    ]
    if stats.get("duplicate_rows_dropped"):
        lines.append(f"duplicates     {stats['duplicate_rows_dropped']:,} exact duplicate rows dropped (data.duplicates=keep keeps them)")
    seen = stats.get("targets_in_training_history")
    if seen is not None:
        lines.append(f"targets seen   test {seen['test']:,} ({seen['test_share']:.1%}), validation {seen['valid']:,} "
                     f"({seen['valid_share']:.1%}) of users' targets already occur earlier in their history")
        if seen["test"] or seen["valid"]:
            lines.append("NOTE: repeats inflate leave-one-out metrics when the model may recommend seen items; "
                         "data.repeats=keep_last drops the earlier copies")
    if stats.get("synthetic"):
        lines.append("NOTE: this is SYNTHETIC data (llm4cdsr synth / built-in demo world), not a real benchmark")
    return "\n".join(lines)


# ----- inputs ---------------------------------------------------------------------------------
TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".tsv")


def _paths(value) -> list[Path]:
    if value is None or value == "" or value == []:
        return []
    return [Path(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def _find_in_folder(folder: Path, stem: str) -> Path | None:
    for suffix in TABLE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def resolve_inputs(data_cfg: dict) -> dict[str, Any]:
    """Which format and which files the `data` section names (format `auto` resolved)."""
    fmt = str(data_cfg.get("format", "auto"))
    interactions, items = _paths(data_cfg.get("interactions")), _paths(data_cfg.get("items"))
    reviews, meta = _paths(data_cfg.get("reviews")), _paths(data_cfg.get("meta"))
    known = ("auto", "synthetic", "table", "amazon", "amazon2018", "amazon2023", "recbole", "douban")
    if fmt not in known:
        raise DataError(f"data.format must be one of {', '.join(known)}, got {fmt!r}")

    marker_dirs: list[Path] = []
    if len(interactions) == 1 and interactions[0].is_dir():
        folder = interactions[0]
        marker_dirs.append(folder)
        inter_files = sorted(folder.glob("*.inter"))
        if inter_files and fmt in ("auto", "recbole"):
            fmt, interactions = "recbole", inter_files
            items = items or sorted(folder.glob("*.item"))
        elif fmt == "douban" or (fmt == "auto" and douban.is_douban_folder(folder)):
            fmt = "douban"  # douban_inputs below finds the files
        else:
            found = _find_in_folder(folder, "interactions")
            if found is None:
                raise DataError(f"{folder}: no interactions.csv / interactions.parquet (or RecBole .inter files) in this folder")
            interactions = [found]
            if not items:
                found_items = _find_in_folder(folder, "items")
                if found_items is None:
                    raise DataError(f"{folder}: no items.csv / items.parquet in this folder")
                items = [found_items]
    marker_dirs += [p.parent for p in interactions]

    if items and not interactions:
        raise DataError("data.items is set but data.interactions is not: the table and RecBole formats need an interactions file (--interactions FILE)")
    if meta and not reviews:
        raise DataError("data.meta is set but data.reviews is not: the Amazon format needs two review dumps (--reviews A B)")
    if fmt == "synthetic" and (interactions or reviews):
        raise DataError("data.format is synthetic but input files are named (data.interactions / data.reviews); drop one or the other")
    if fmt == "auto":
        if reviews:
            fmt = "amazon"
        elif interactions:
            fmt = ("recbole" if all(p.suffix == ".inter" for p in interactions)
                   else "douban" if all(douban.is_douban_review(p) for p in interactions) else "table")
        else:
            fmt = "synthetic"
    if fmt == "douban":
        interactions, items = douban.douban_inputs(interactions, items)
    if fmt.startswith("amazon") and not reviews:
        raise DataError("data.reviews: the Amazon format needs two review dumps (--reviews A.json.gz B.json.gz)")
    if fmt in ("table", "recbole") and not interactions:
        raise DataError(f"data.interactions: format {fmt} needs an interactions file (--interactions FILE)")
    if fmt == "table":
        if len(interactions) != 1:
            raise DataError(f"data.interactions: the table format takes one file, got {len(interactions)}")
        if len(items) != 1:
            raise DataError("data.items: the table format needs one items file (--items FILE)")
    files = interactions + items if fmt in ("table", "recbole", "douban") else reviews + meta if fmt.startswith("amazon") else []
    for p in files:
        if not p.is_file():
            raise DataError(f"input file not found: {p}")
    synthetic = fmt == "synthetic" or any((d / SYNTH_MARKER).is_file() for d in marker_dirs)
    return {"format": fmt, "interactions": interactions, "items": items, "reviews": reviews, "meta": meta,
            "files": files, "synthetic": synthetic}


def load_raw(data_cfg: dict, inputs: dict | None = None, progress: bool = True) -> RawData:
    """Read the raw data the `data` section names, in any supported format."""
    inputs = inputs or resolve_inputs(data_cfg)
    fmt = inputs["format"]
    if fmt == "synthetic":
        params = synth_params(data_cfg["synth"])
        interactions, items = generate_world(**params)
        raw = from_tables(interactions.astype(str), items, None, "synthetic interactions", "synthetic items", "s")
        raw.source = {"format": "synthetic", "files": [], "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}
    elif fmt == "table":
        raw = read_tables(inputs["interactions"][0], inputs["items"][0], data_cfg["columns"],
                          data_cfg["csv_sep"], data_cfg["time_unit"], data_cfg.get("encoding", "utf-8"))
    elif fmt == "recbole":
        raw = read_recbole(inputs["interactions"], inputs["items"], data_cfg["columns"], data_cfg["time_unit"])
    elif fmt == "douban":
        raw = read_douban(inputs["interactions"], inputs["items"], data_cfg.get("douban_min_rating", 0),
                          bool(data_cfg.get("skip_bad_lines", False)), progress)
    else:
        version = fmt[len("amazon"):] or "auto"
        raw = read_amazon(inputs["reviews"], inputs["meta"], version, bool(data_cfg["skip_bad_lines"]), progress)
    raw.source["synthetic"] = bool(inputs["synthetic"])
    return raw


# The keys of the `data` section that name where the data comes from.
INPUT_KEYS = ("format", "interactions", "items", "reviews", "meta")


def workspace_data_config(cfg: dict) -> tuple[dict, str | None]:
    """(cfg, note): a config whose `data` section names no input, run on a workspace whose dataset
    was prepared from named files, takes that dataset's own inputs (and, where the section is the
    defaults throughout, its own options) instead of turning into the synthetic demo world, which
    would replace the user's dataset without a word. `note` says what was adopted (None: nothing)."""
    data = cfg["data"]
    if data.get("format", "auto") != "auto" or any(_paths(data.get(k)) for k in INPUT_KEYS[1:]):
        return cfg, None  # inputs named: the user asked for them
    ws = Workspace(cfg["workspace"])
    meta_path = ws.dataset_dir / "meta.json"
    try:
        meta = ws.meta(ws.dataset_dir)
    except ValueError:
        return cfg, None  # unreadable: prepare makes it again as before
    recorded = (meta or {}).get("data_config")
    if not recorded or (meta.get("source") or {}).get("format") == "synthetic":
        return cfg, None
    defaults = default_data_config()
    own = {k: v for k, v in data.items() if k not in INPUT_KEYS}
    same_options = own == {k: v for k, v in defaults.items() if k not in INPUT_KEYS}
    adopted = dict(recorded) if same_options else {**own, **{k: recorded.get(k, defaults[k]) for k in INPUT_KEYS}}
    files = ", ".join(str(f) for f in meta["source"].get("files", [])) or meta["source"].get("format", "?")
    note = (f"data: no input named; using this workspace's dataset ({meta_path}), prepared from {files}"
            + ("" if same_options else ", with the data options of this config")
            + " (name other inputs, or data.format=synthetic, to replace it)")
    return dict(cfg, data=adopted), note


# ----- staleness --------------------------------------------------------------------------------
def _fingerprint(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def data_hash(cfg: dict, inputs: dict | None = None) -> str:
    """Hash of what decides the dataset: the `data` section, the input files (path, size,
    mtime) and the pipeline and format versions. Stored as meta.json's `config_hash`."""
    data_cfg = dict(cfg["data"])
    inputs = inputs or resolve_inputs(data_cfg)
    if inputs["format"] != "synthetic":
        data_cfg.pop("synth", None)  # the demo world's knobs do not touch real data
    data_cfg.pop("engine", None)  # every engine makes the same dataset (tests/test_data_columnar.py)
    return stable_hash({
        "data": data_cfg,
        "files": [_fingerprint(p) for p in inputs["files"]],
        "pipeline_version": PIPELINE_VERSION,
        "format_version": FORMAT_VERSION,
    })


def is_current(cfg: dict) -> bool:
    """True when `<workspace>/dataset/` was prepared from exactly these inputs and options."""
    meta = Workspace(cfg["workspace"]).meta(Workspace(cfg["workspace"]).dataset_dir)
    if meta is None or meta.get("format_version") != FORMAT_VERSION:
        return False
    try:
        return meta.get("config_hash") == data_hash(cfg)
    except (DataError, OSError):
        return False  # inputs gone or unreadable: nothing proves the dataset current


def run_prepare(cfg: dict, force: bool = False, progress: bool = True) -> PreparedDataset:
    """Prepare the dataset into `<workspace>/dataset/`, or load it when it is current."""
    ws = Workspace(cfg["workspace"])
    inputs = resolve_inputs(cfg["data"])
    config_hash = data_hash(cfg, inputs)

    def current() -> PreparedDataset | None:
        meta = ws.meta(ws.dataset_dir)
        if meta is not None and meta.get("config_hash") == config_hash and meta.get("format_version") == FORMAT_VERSION:
            try:
                return PreparedDataset.load(ws.dataset_dir)
            except DatasetError as e:
                log.warning("%s; preparing again", e)
        return None

    ds = None if force else current()
    if ds is not None:
        return ds
    fresh = not ws.root.exists()
    try:
        return _prepare_locked(ws, cfg, inputs, config_hash, current, force, progress)
    except BaseException:
        if fresh:  # a failed first prepare leaves no workspace behind (it held only the lock files)
            _remove_if_only_locks(ws.root)
        raise


def _remove_if_only_locks(root: Path) -> None:
    try:
        entries = list(root.iterdir())
        if all(p.is_file() and p.name.startswith(".") and ".lock" in p.name for p in entries):
            for p in entries:
                p.unlink()
            root.rmdir()
    except OSError:
        pass  # another process is using it: leave it


def _prepare_locked(ws: Workspace, cfg: dict, inputs: dict, config_hash: str, current, force: bool,
                    progress: bool) -> PreparedDataset:
    with folder_lock(ws.dataset_dir):
        ds = None if force else current()  # another process may have just made it
        if ds is not None:
            return ds
        ds = None
        engine = columnar.engine_for(cfg["data"], inputs["format"])
        if engine == "duckdb":
            ds = columnar.prepare_dump(cfg["data"], inputs, progress)  # None: the Python path reads it
        if ds is None:
            engine = "python"
            raw = load_raw(cfg["data"], inputs, progress)
            ds = build_dataset(raw, cfg["data"])
            del raw
        ds.meta["engine"] = columnar.engine_version() if engine == "duckdb" else "python"
        ds.meta["config_hash"] = config_hash
        ds.meta["data_config"] = cfg["data"]
        ds.save(ws.dataset_dir, dataset_stats(ds))
    return ds
