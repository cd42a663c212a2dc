"""`prepare` on a raw review dump: the Python path against the DuckDB engine, side by side.

    python benchmarks/bench_prepare.py                      # 5M-line synthetic Amazon 2023 dump, 5-core
    python benchmarks/bench_prepare.py --lines 200000 --no-choice
    python benchmarks/bench_prepare.py --tables             # the real Food x Kitchen tables (as before)

The dump (two categories' reviews and metadata, JSONL.gz, benchmarks/dump_synth.py) is written
once under /tmp and reused. Each run is a fresh subprocess; its wall time, CPU time (user + sys)
and peak resident memory come from wait4, so they belong to that run alone (pyarrow's and
DuckDB's native allocations included). Targets (issue 23): the engine >= 3x the Python path's
lines/s at <= 2 GB peak, and the same dataset (checked here on the written arrays and stats).

The engine choice: DuckDB and Polars each do the same core work on the same dump (read the two
review files' user, item and time; integer codes; the iterated 5-core, recounting each round;
histories sorted by user, time and line), measured once each (`--no-choice` skips it; Polars is
not a dependency: `pip install polars` to measure it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dump_synth import write_dump  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "food-kitchen"
MAX_RSS_MB = 2048

PREPARE = """
import json, sys, time
from llm4cdsr.config import load_config
from llm4cdsr.data.prepare import run_prepare, dataset_stats
workspace, engine, files, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
cfg = load_config([], ["workspace=" + workspace, "data.engine=" + engine, *options])
cfg["data"].update(files)
start = time.perf_counter()
ds = run_prepare(cfg, force=True, progress=False)
print(json.dumps({"prepare_s": time.perf_counter() - start, "engine": ds.meta["engine"], "stats": dataset_stats(ds)}))
"""

# The engine choice: the same work in each engine's own idiom.
CORE = {
    "duckdb": """
import duckdb, json, sys
files = json.loads(sys.argv[1])
con = duckdb.connect()
con.execute("CREATE TABLE r AS SELECT u, i, t, (filename <> ?)::TINYINT AS d FROM read_json(?, columns = "
            "{'user_id': 'VARCHAR', 'parent_asin': 'VARCHAR', 'timestamp': 'BIGINT'}, format = 'newline_delimited', "
            "filename = true) AS j(u, i, t)", [files[0], files])
n = con.execute("SELECT count(*) FROM r").fetchall()[0][0]
con.execute("CREATE TABLE users AS SELECT u, (row_number() OVER () - 1)::INTEGER AS uc FROM (SELECT DISTINCT u FROM r)")
con.execute("CREATE TABLE items AS SELECT i, (row_number() OVER () - 1)::INTEGER AS ic FROM (SELECT DISTINCT i FROM r)")
con.execute("CREATE TABLE k AS SELECT uc AS u, ic AS i, t, r.rowid AS row FROM r JOIN users USING (u) JOIN items USING (i)")
con.execute("DROP TABLE r")
while con.execute("DELETE FROM k WHERE u IN (SELECT u FROM k GROUP BY u HAVING count(*) < 5) "
                  "OR i IN (SELECT i FROM k GROUP BY i HAVING count(*) < 5)").fetchall()[0][0]:
    pass
out = con.execute("SELECT u, i, t FROM k ORDER BY u, t, row").fetchnumpy()
print(json.dumps({"lines": n, "kept": len(out["u"])}))
""",
    "polars": """
import json, sys
import polars as pl
files = json.loads(sys.argv[1])
schema = {"user_id": pl.String, "parent_asin": pl.String, "timestamp": pl.Int64}
r = pl.concat([pl.read_ndjson(f, schema=schema) for f in files], rechunk=False).with_row_index("row")
n = r.height
k = r.select(pl.col("user_id").cast(pl.Categorical).to_physical().alias("u"),
             pl.col("parent_asin").cast(pl.Categorical).to_physical().alias("i"), pl.col("timestamp").alias("t"), "row")
del r
while True:
    before = k.height
    k = k.filter((pl.len().over("u") >= 5) & (pl.len().over("i") >= 5))
    if k.height == before:
        break
out = k.sort(["u", "t", "row"]).select("u", "i", "t").to_numpy()
print(json.dumps({"lines": n, "kept": len(out)}))
""",
}


def run_child(code: str, *args: str) -> dict:
    """The child's last stdout line (JSON) plus its wall time, CPU time and peak RSS (its own rusage)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"child failed ({proc.returncode}):\n{err.read().decode()[-3000:]}")
        result = json.loads(out.read().decode().strip().splitlines()[-1])
    result.update(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, maxrss_mb=usage.ru_maxrss / 1024)  # KB on Linux
    return result


def same_dataset(a: Path, b: Path) -> str:
    """'yes' when both prepared folders hold the same arrays, items and stats, else what differs."""
    from llm4cdsr.data.dataset import PreparedDataset

    x, y = PreparedDataset.load(a), PreparedDataset.load(b)
    differ = [name for name in ("user_ids", "seq_offsets", "seq_items", "seq_times")
              if not np.array_equal(getattr(x, name), getattr(y, name))]
    if not x.items.equals(y.items):
        differ.append("items")
    stats = [json.loads((f / "stats.json").read_text()) for f in (a, b)]
    if stats[0] != stats[1]:
        differ.append("stats.json")
    return "yes (arrays, items, stats.json)" if not differ else "NO: " + ", ".join(differ)


def bench_dump(args) -> int:
    folder = args.dump or Path(tempfile.gettempdir()) / f"llm4cdsr-dump-{args.lines}"
    t0 = time.perf_counter()
    dump = write_dump(folder, args.lines, seed=0)
    lines = dump["review_lines"]
    print(f"dump: {folder}  ({lines:,} review lines in 2 categories + metadata, JSONL.gz; ready in {time.perf_counter() - t0:.0f} s)")
    files = json.dumps({"reviews": dump["reviews"], "meta": dump["meta"]})
    options = json.dumps([f"data.min_user={args.kcore}", f"data.min_item={args.kcore}"])
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        for engine in ("python", "duckdb"):
            rows[engine] = run_child(PREPARE, str(Path(tmp) / engine), engine, files, options)
            r = rows[engine]
            print(f"  {r['engine']:<16} prepare {r['prepare_s']:7.1f} s {lines / r['prepare_s']:>9,.0f} lines/s  "
                  f"(process: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU)  peak RSS {r['maxrss_mb']:6.0f} MB", flush=True)
        same = same_dataset(Path(tmp) / "python" / "dataset", Path(tmp) / "duckdb" / "dataset")
    py, dk = rows["python"], rows["duckdb"]
    ratio, cpu_ratio = py["prepare_s"] / dk["prepare_s"], py["cpu_s"] / dk["cpu_s"]
    ok = ratio >= 3 and dk["maxrss_mb"] <= MAX_RSS_MB
    print(f"  ratio            {ratio:.2f}x the lines/s ({cpu_ratio:.2f}x in process CPU time); peak RSS {dk['maxrss_mb']:.0f} MB against "
          f"{py['maxrss_mb']:.0f} MB [{'OK' if ok else 'OVER TARGET'}: >= 3x, <= {MAX_RSS_MB} MB]")
    s = dk["stats"]
    print(f"  same dataset: {same}; {args.kcore}-core: {s['users']:,} users, "
          f"{sum(s['items'].values()):,} items, {sum(s['interactions'].values()):,} interactions")
    if args.no_choice:
        return 0
    print("engine choice: read the reviews, integer codes, iterated 5-core (recounted each round), sorted histories")
    for name, code in CORE.items():
        try:
            r = run_child(code, json.dumps(dump["reviews"]))
        except RuntimeError as e:
            print(f"  {name:<8} not measured: {str(e).splitlines()[-1]}")
            continue
        print(f"  {name:<8} {r['wall_s']:7.1f} s wall {r['cpu_s']:7.1f} s CPU {r['lines'] / r['wall_s']:>9,.0f} lines/s  "
              f"peak RSS {r['maxrss_mb']:6.0f} MB  ({r['kept']:,} interactions kept)", flush=True)
    return 0


TABLES = """
import json, sys, time
start = time.perf_counter()
from llm4cdsr.config import load_config
from llm4cdsr.data.prepare import run_prepare, dataset_stats
imported = time.perf_counter()
if sys.argv[1] != "import-only":
    cfg = load_config([], ["workspace=" + sys.argv[1]])
    cfg["data"].update(interactions=sys.argv[2], items=sys.argv[3])
    ds = run_prepare(cfg, force=True, progress=False)
    stats = dataset_stats(ds)
else:
    stats = None
end = time.perf_counter()
print(json.dumps({"import_s": imported - start, "prepare_s": end - imported, "stats": stats}))
"""


def bench_tables(args) -> int:
    """Time and peak memory of `prepare` on the real Food x Kitchen tables (target: < 60 s, < 2 GB)."""
    inter, items = args.data / "interactions.csv", args.data / "items.csv"
    if not (inter.is_file() and items.is_file()):
        print(f"SKIPPED: Food x Kitchen not found at {args.data} (expected interactions.csv and items.csv)")
        return 0
    base = run_child(TABLES, "import-only")
    print(f"import only: {base['wall_s']:.2f} s wall, peak RSS {base['maxrss_mb']:.0f} MB")
    for k in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            r = run_child(TABLES, tmp, str(inter), str(items))
        s = r["stats"]
        print(f"run {k + 1}: prepare {r['prepare_s']:.2f} s (process wall {r['wall_s']:.2f} s incl. imports), "
              f"peak RSS {r['maxrss_mb']:.0f} MB "
              f"[{'OK' if r['wall_s'] < 60 and r['maxrss_mb'] < MAX_RSS_MB else 'OVER TARGET'}: < 60 s, < {MAX_RSS_MB} MB]")
    print(f"users {s['users']:,}; items {s['items']}; interactions {s['interactions']}; "
          f"overlap {s['overlap_users']:,} ({s['overlap_ratio']:.1%}); history {s['history_length']}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=5_000_000, help="review lines of the synthetic dump (default 5,000,000)")
    parser.add_argument("--dump", type=Path, help="where the dump is written and reused (default /tmp/llm4cdsr-dump-LINES)")
    parser.add_argument("--kcore", type=int, default=5, help="data.min_user = data.min_item (default 5)")
    parser.add_argument("--no-choice", action="store_true", help="skip the DuckDB / Polars comparison")
    parser.add_argument("--tables", action="store_true", help="time prepare on the Food x Kitchen tables instead")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"--tables: folder with interactions.csv, items.csv (default {DEFAULT_DATA})")
    parser.add_argument("--repeat", type=int, default=1, help="--tables: runs to time (default 1)")
    args = parser.parse_args()
    return bench_tables(args) if args.tables else bench_dump(args)


if __name__ == "__main__":
    sys.exit(main())
