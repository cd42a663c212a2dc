"""Time and peak memory of `prepare` on the real Food x Kitchen set (target: < 60 s, < 2 GB).

    python benchmarks/bench_prepare.py [--data DIR] [--repeat N]

Each run is a fresh subprocess, so its peak resident memory (ru_maxrss, which sees pyarrow's and
pandas' native allocations that tracemalloc misses) belongs to that run alone. The import-only
figure shows how much of the peak is the interpreter and libraries.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "food-kitchen"

CHILD = """
import json, resource, sys, time
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
print(json.dumps({"import_s": imported - start, "prepare_s": end - imported,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "stats": stats}))
"""


def run_child(*args: str) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, *args], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder with interactions.csv, items.csv (default {DEFAULT_DATA})")
    parser.add_argument("--repeat", type=int, default=1, help="runs to time (default 1)")
    args = parser.parse_args()
    inter, items = args.data / "interactions.csv", args.data / "items.csv"
    if not (inter.is_file() and items.is_file()):
        print(f"SKIPPED: Food x Kitchen not found at {args.data} (expected interactions.csv and items.csv)")
        return 0
    base = run_child("import-only")
    print(f"import only: {base['wall_s']:.2f} s wall, peak RSS {base['maxrss_mb']:.0f} MB")
    for k in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            r = run_child(tmp, str(inter), str(items))
        s = r["stats"]
        print(f"run {k + 1}: prepare {r['prepare_s']:.2f} s (process wall {r['wall_s']:.2f} s incl. imports), "
              f"peak RSS {r['maxrss_mb']:.0f} MB "
              f"[{'OK' if r['wall_s'] < 60 and r['maxrss_mb'] < 2048 else 'OVER TARGET'}: < 60 s, < 2048 MB]")
    print(f"users {s['users']:,}; items {s['items']}; interactions {s['interactions']}; "
          f"overlap {s['overlap_users']:,} ({s['overlap_ratio']:.1%}); history {s['history_length']}")
    # resource's own view of the children, as a cross-check of the figure each child reported.
    print(f"max child RSS (RUSAGE_CHILDREN): {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
