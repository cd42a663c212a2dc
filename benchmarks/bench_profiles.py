"""Template profiles: the per-user path (before) against the array path (now), side by side in one run.

Both make the texts of the `profile` stage's template backend from the same users, clusters and
titles: before, `split_by_cluster` + `template_profile` per user (a Python pass per title and
user); now, `group_by_cluster` + `template_profiles` over all users at once. The two alternate
(before, now, now, before, ...) so the load of other processes hits both alike; the texts are
checked to be identical. Printed: users/s of each and the ratio.

The stage also embeds every profile text; with `--embed-sample N` (default 256) N of the texts
are embedded by the configured embedder (ONNX int8 MiniLM by default), and the stage's users/s
before and after is printed from the measured parts (texts + embedding), to say how much of the
stage the texts were.

    python benchmarks/bench_profiles.py [--users 20000] [--rounds 2] [--embed-sample 256]
    python benchmarks/bench_profiles.py --workspace workspace-food-kitchen   # a prepared and embedded workspace
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from llm4cdsr.config import load_config  # noqa: E402
from llm4cdsr.data.dataset import PreparedDataset  # noqa: E402
from llm4cdsr.data.synth import synth_dataset  # noqa: E402
from llm4cdsr.llm.embedders import make_raw_embedder  # noqa: E402
from llm4cdsr.llm.profiling import (  # noqa: E402
    cluster_items,
    group_by_cluster,
    split_by_cluster,
    template_profile,
    template_profiles,
)


def world(args, prof: dict) -> tuple[PreparedDataset, np.ndarray]:
    """(dataset, cluster label per global id)."""
    if args.workspace:
        ds = PreparedDataset.load(Path(args.workspace) / "dataset")
        vectors = np.load(Path(args.workspace) / "embeddings" / "items.npy", allow_pickle=False)[1:]
    else:
        n = args.users
        ds = synth_dataset(seed=0, n_users=n, n_items=(max(50, n // 5), max(50, 3 * n // 10)))
        # Item vectors that follow taste (the category) plus noise: clusters like the stage's k-means
        # on text embeddings give, without embedding the items.
        taste = ds.items["categories"].astype("category").cat.codes.to_numpy()
        rng = np.random.default_rng(0)
        vectors = np.eye(taste.max() + 1)[taste] + 0.3 * rng.standard_normal((len(taste), taste.max() + 1))
    return ds, cluster_items(vectors, prof["n_clusters"], prof["seed"])


def before(split, users, labels, titles, prof) -> list[str]:
    return [template_profile(split_by_cluster(split.train_sequence(int(u)), labels), titles, prof) for u in users]


def now(split, users, labels, titles, prof) -> list[str]:
    return template_profiles(group_by_cluster(split.train_items, split.train_offsets, users, labels), titles, prof)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000, help="users of the synthetic world (default 20000)")
    ap.add_argument("--workspace", default="", help="a prepared and embedded workspace instead of a synthetic world")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two paths (default 2)")
    ap.add_argument("--embed-sample", type=int, default=256, help="profile texts embedded to time the stage (0: skip)")
    ap.add_argument("--threads", type=int, default=1, help="embedding threads (default 1)")
    args = ap.parse_args()

    cfg = load_config([], [])
    prof = cfg["profile"]
    ds, labels = world(args, prof)
    split = ds.split()
    users = np.arange(ds.n_users)
    titles = np.concatenate([[""], ds.items["title"].astype(str).to_numpy()])
    times = {"before": 0.0, "now": 0.0}
    paths = {"before": before, "now": now}
    texts = {}
    for r in range(args.rounds):
        for name in (("before", "now") if r % 2 == 0 else ("now", "before")):
            t0 = time.perf_counter()
            texts[name] = paths[name](split, users, labels, titles, prof)
            times[name] += time.perf_counter() - t0
    assert texts["before"] == texts["now"], "the two paths made different texts"
    n = len(users) * args.rounds
    rate = {k: n / v for k, v in times.items()}
    print(f"{'synthetic ' + str(args.users) if not args.workspace else args.workspace}: {len(users):,} users, "
          f"{ds.n_items_total:,} items, mean text {np.mean([len(t) for t in texts['now']]):.0f} chars; texts identical")
    print(f"template texts: before {rate['before']:,.0f} users/s, now {rate['now']:,.0f} users/s: "
          f"ratio {rate['now'] / rate['before']:.2f}x")

    if args.embed_sample > 0:
        sample = [texts["now"][i] for i in np.random.default_rng(0).choice(len(users), args.embed_sample, replace=False)]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config([], [f"workspace={tmp}"])
            embedder = make_raw_embedder(cfg, "profile")
            if hasattr(embedder, "_threads"):
                embedder._threads = args.threads
            embedder.embed_batch(sample[:8])  # export / load outside the timing
            order = sorted(range(len(sample)), key=lambda i: -len(sample[i]))  # as CachedEmbedder batches them
            t0 = time.perf_counter()
            for s in range(0, len(order), cfg["embed"]["batch_size"]):
                embedder.embed_batch([sample[i] for i in order[s:s + cfg["embed"]["batch_size"]]])
            per_text = (time.perf_counter() - t0) / len(sample)
        stage = {k: 1.0 / (1.0 / rate[k] + per_text) for k in rate}
        print(f"embedding ({embedder.backend}, {args.threads} thread(s)): {1 / per_text:,.1f} texts/s; "
              f"stage (texts + embedding): before {stage['before']:,.1f} users/s, now {stage['now']:,.1f} users/s: "
              f"ratio {stage['now'] / stage['before']:.2f}x (embedding {per_text * rate['now'] / (1 + per_text * rate['now']):.0%} "
              f"of the stage now)")


if __name__ == "__main__":
    main()
