"""The template profile stage: whole texts (today's default) against pieces, side by side in one run.

Both paths profile the same users of the same clusters with the same embedder (ONNX int8 MiniLM by
default, `--threads` threads, each path with a fresh cache of its own):
- text (profile.template_vectors=text): every profile text embedded whole, cut at the model's window;
- pieces (profile.template_vectors=pieces): each distinct title and keyword of all the texts embedded
  once, a user's vector the character-weighted mean of its text's pieces.
The k-means clusters, the groups and the texts are made once and counted in both (the pieces path
writes the same texts). The embedding of each path is cut into slices that alternate (text,
pieces, pieces, text, ...), so the load of other processes hits both alike. Printed: seconds of
each part, users/s of each path and the ratio; then how far the vectors moved: cosine of each
user's two vectors, the correlation of user-user cosines, and, on a workspace, a zero-shot
retrieval proxy (a user's vector against the item vectors of its test item and 100 sampled items
of that domain, none from its history): not a trained ranking.

    python benchmarks/bench_profiles.py --workspace workspace-food-kitchen            # every user
    python benchmarks/bench_profiles.py --workspace workspace-food-kitchen --users 5000
    python benchmarks/bench_profiles.py --users 20000                                # synthetic world
    python benchmarks/bench_profiles.py --workspace ... --levers 512 --no-stage      # the whole-text levers
    python benchmarks/bench_profiles.py --texts --no-stage                           # per-user vs array texts

The workspace is only read (dataset, item vectors); the ONNX export and the caches go to a
temporary folder. `--levers N` times the whole-text path's own levers on N profile texts:
batches in random order against length-sorted ones, bigger batches and ONNX runs, a 128-token
window (with its cosine to the 256-token vectors). `--texts` compares the template texts of the
per-user path with the array path (identical texts, checked).
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
from llm4cdsr.llm.cache import Cache  # noqa: E402
from llm4cdsr.llm.embedders import CachedEmbedder, _onnx_run, _onnx_tokenizer, make_raw_embedder  # noqa: E402
from llm4cdsr.llm.profiling import (  # noqa: E402
    cluster_items,
    group_by_cluster,
    split_by_cluster,
    template_pieces,
    template_profile,
    template_profiles,
)


def world(args) -> tuple[PreparedDataset, np.ndarray | None, np.ndarray]:
    """(dataset, item vectors by global id or None, vectors to cluster on (ids 1..N))."""
    if args.workspace:
        ds = PreparedDataset.load(Path(args.workspace) / "dataset")
        items = np.load(Path(args.workspace) / "embeddings" / "items.npy", allow_pickle=False)
        return ds, items, items[1:]
    n = args.users or 20000
    ds = synth_dataset(seed=0, n_users=n, n_items=(max(50, n // 5), max(50, 3 * n // 10)))
    # Item vectors that follow taste (the category) plus noise: clusters like the stage's k-means
    # on text embeddings give, without embedding the items.
    taste = ds.items["categories"].astype("category").cat.codes.to_numpy()
    rng = np.random.default_rng(0)
    return ds, None, np.eye(taste.max() + 1)[taste] + 0.3 * rng.standard_normal((len(taste), taste.max() + 1))


def timed(fn, *a):
    t0 = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t0


def slices(texts: list[str], k: int) -> list[np.ndarray]:
    """k interleaved slices of the texts' indices, longest first, so each slice holds every length."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [order[i::k] for i in range(k)]


def compare_texts(split, users, labels, titles, prof, rounds: int) -> None:
    """The template texts: per-user path (before) against the array path (now), alternating."""
    def before():
        return [template_profile(split_by_cluster(split.train_sequence(int(u)), labels), titles, prof) for u in users]

    def now():
        return template_profiles(group_by_cluster(split.train_items, split.train_offsets, users, labels), titles, prof)

    times, texts = {"before": 0.0, "now": 0.0}, {}
    for r in range(rounds):
        for name in (("before", "now") if r % 2 == 0 else ("now", "before")):
            texts[name], dt = timed(before if name == "before" else now)
            times[name] += dt
    assert texts["before"] == texts["now"], "the two paths made different texts"
    rate = {k: len(users) * rounds / v for k, v in times.items()}
    print(f"template texts: per-user path {rate['before']:,.0f} users/s, array path {rate['now']:,.0f} users/s: "
          f"ratio {rate['now'] / rate['before']:.2f}x (texts identical)")


def levers(raw, texts: list[str], n: int, batch: int, rounds: int) -> None:
    """The whole-text path's own levers, each on the same sample of texts, alternating."""
    sample = [texts[i] for i in np.random.default_rng(1).choice(len(texts), min(n, len(texts)), replace=False)]
    by_length = np.argsort([-len(t) for t in sample], kind="stable")  # as CachedEmbedder orders them
    shuffled = np.random.default_rng(2).permutation(len(sample))
    window128 = _onnx_tokenizer(raw._path, 128)

    def run(order, size, tokens_per_run, tokenizer):
        out = np.zeros((len(sample), raw.dim), dtype=np.float32)
        for s in range(0, len(order), size):
            rows = order[s:s + size]
            out[rows] = _onnx_run(raw._session, tokenizer, raw._inputs, [sample[i] for i in rows], tokens_per_run)
        return out  # (n, D), in sample order

    cases = {"today: length-sorted batches of 64, runs of 512 tokens": (by_length, batch, 512, raw._tokenizer),
             "batches in random order": (shuffled, batch, 512, raw._tokenizer),
             "batches of 256": (by_length, 256, 512, raw._tokenizer),
             "runs of 2048 tokens": (by_length, batch, 2048, raw._tokenizer),
             "a 128-token window": (by_length, batch, 512, window128)}
    times = dict.fromkeys(cases, 0.0)
    vectors = {}
    for r in range(rounds):
        for name in (list(cases) if r % 2 == 0 else list(cases)[::-1]):
            vectors[name], dt = timed(run, *cases[name])
            times[name] += dt
    today = next(iter(cases))
    tokens = np.array([len(e.ids) for e in raw._tokenizer.encode_batch(sample)])
    print(f"levers of the whole-text path, {len(sample)} profile texts (mean {tokens.mean():.0f} tokens, "
          f"{(tokens >= 256).mean():.1%} at the 256-token window, {(tokens > 128).mean():.1%} over 128):")
    for name in cases:
        cos = np.sum(vectors[name] * vectors[today], axis=1)
        print(f"  {name:56s} {len(sample) * rounds / times[name]:6.1f} texts/s: {times[today] / times[name]:.2f}x; "
              f"cosine to today's mean {cos.mean():.4f}, 1st percentile {np.percentile(cos, 1):.4f}, min {cos.min():.4f}")
    print(f"  duplicate texts among all {len(texts):,}: {len(texts) - len(set(texts)):,} (the cache embeds each once)")


def retrieval_proxy(ds, split, users, item_vectors, vectors: dict, n: int, seed: int = 0) -> dict:
    """ndcg@10 and hit@10 of each user's test item among 100 items of its domain drawn uniformly
    with replacement (none from its history), scored by cosine to the user's vector; on n sampled users."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(users), min(n, len(users)), replace=False))
    u = users[rows]
    target = split.test_target[u].astype(np.int64)
    domain = ds.items["domain"].astype(str).to_numpy()
    domain = np.concatenate([[""], domain])  # by global id
    history = np.repeat(np.arange(ds.n_users, dtype=np.int64), np.diff(ds.seq_offsets)) * (len(domain) + 1) \
        + ds.seq_items.astype(np.int64)
    history.sort()
    negatives = np.empty((len(u), 100), dtype=np.int64)
    for d in np.unique(domain[target]):  # a draw per domain, as arrays
        pool = np.flatnonzero(domain == d)
        mine = np.flatnonzero(domain[target] == d)
        draw = pool[rng.integers(len(pool), size=(len(mine), 160))]  # (m, 160), more than needed
        keys = u[mine, None] * (len(domain) + 1) + draw
        seen = history[np.minimum(np.searchsorted(history, keys), len(history) - 1)] == keys
        first = np.argsort(seen, axis=1, kind="stable")[:, :100]  # the first 100 unseen
        assert not np.take_along_axis(seen, first, 1).any(), "too few unseen items drawn"
        negatives[mine] = np.take_along_axis(draw, first, 1)
    candidates = np.concatenate([target[:, None], negatives], axis=1)  # (n, 101), the target first
    out = {}
    for name, v in vectors.items():
        scores = np.concatenate([np.einsum("bcd,bd->bc", item_vectors[candidates[s:s + 1000]], v[rows[s:s + 1000]])
                                 for s in range(0, len(rows), 1000)])  # (n, 101)
        rank = (scores[:, 1:] > scores[:, :1]).sum(1)
        out[name] = {"ndcg@10": float(np.mean(np.where(rank < 10, 1 / np.log2(rank + 2), 0.0))),
                     "hit@10": float(np.mean(rank < 10)), "users": len(rows)}
    return out


def stage(args, ds, split, users, labels, t_cluster, item_vectors, prof, raw) -> None:
    titles = np.concatenate([[""], ds.items["title"].astype(str).to_numpy()])
    groups, t_groups = timed(group_by_cluster, split.train_items, split.train_offsets, users, labels)
    texts, t_texts = timed(template_profiles, groups, titles, prof)
    pieces, t_pieces = timed(template_pieces, groups, titles, prof)
    with tempfile.TemporaryDirectory() as tmp:
        embed = {name: CachedEmbedder(raw, Cache(Path(tmp) / f"{name}.sqlite"), "profile", progress=False)
                 for name in ("text", "pieces")}
        inputs = {"text": texts, "pieces": pieces.texts}
        parts = {name: slices(inputs[name], args.slices) for name in inputs}
        out: dict[str, np.ndarray] = {}
        t_embed = {"text": 0.0, "pieces": 0.0}
        for k in range(args.slices):
            for name in (("text", "pieces") if k % 2 == 0 else ("pieces", "text")):
                rows = parts[name][k]
                got, dt = timed(embed[name].embed, [inputs[name][i] for i in rows])
                out.setdefault(name, np.zeros((len(inputs[name]), got.shape[1]), dtype=np.float32))[rows] = got
                t_embed[name] += dt
        for e in embed.values():
            e.cache.close()
    pooled, t_pool = timed(pieces.pool, out["pieces"])
    vectors = {"text": out["text"], "pieces": pooled}
    shared = t_cluster + t_groups + t_texts
    total = {"text": shared + t_embed["text"], "pieces": shared + t_pieces + t_embed["pieces"] + t_pool}
    rate = {k: len(users) / v for k, v in total.items()}
    chars = {k: sum(map(len, v)) for k, v in inputs.items()}
    print(f"stage, {len(users):,} users, {args.threads} thread(s), {raw.backend}: shared: clusters {t_cluster:.1f} s, "
          f"groups {t_groups:.1f} s, texts {t_texts:.1f} s")
    print(f"  text:   {len(set(texts)):,} distinct texts ({chars['text']:,} chars) embedded in {t_embed['text']:.1f} s; "
          f"stage {total['text']:.1f} s, {rate['text']:,.1f} users/s")
    print(f"  pieces: {len(pieces.texts):,} distinct pieces ({chars['pieces']:,} chars), made in {t_pieces:.1f} s, "
          f"embedded in {t_embed['pieces']:.1f} s, pooled in {t_pool:.2f} s; stage {total['pieces']:.1f} s, "
          f"{rate['pieces']:,.1f} users/s")
    print(f"  ratio (pieces / text users/s): {rate['pieces'] / rate['text']:.2f}x")
    cos = np.sum(vectors["text"] * vectors["pieces"], axis=1)
    sample = np.random.default_rng(0).choice(len(users), min(2000, len(users)), replace=False)
    pairs = np.triu_indices(len(sample), 1)
    a, b = (vectors[k][sample] @ vectors[k][sample].T for k in ("text", "pieces"))
    print(f"  vectors: cosine text-pieces mean {cos.mean():.4f}, 1st percentile {np.percentile(cos, 1):.4f}, "
          f"5th {np.percentile(cos, 5):.4f}, min {cos.min():.4f}; correlation of user-user cosines "
          f"(on {len(sample):,} users) {np.corrcoef(a[pairs], b[pairs])[0, 1]:.3f}")
    if item_vectors is not None:
        proxy = retrieval_proxy(ds, split, users, item_vectors, vectors, args.quality_users)
        print("  retrieval proxy (user vector -> test item among 100 of its domain; not a trained ranking): "
              + "; ".join(f"{k} ndcg@10 {v['ndcg@10']:.4f}, hit@10 {v['hit@10']:.4f}" for k, v in proxy.items())
              + f" ({next(iter(proxy.values()))['users']:,} users)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default="", help="a prepared and embedded workspace (read only) instead of a synthetic world")
    ap.add_argument("--users", type=int, default=0,
                    help="users: a seeded sample of the workspace's (0 = all), or the synthetic world's size (0 = 20000)")
    ap.add_argument("--threads", type=int, default=1, help="embedding threads (default 1)")
    ap.add_argument("--slices", type=int, default=4, help="alternating slices of each path's embedding (default 4)")
    ap.add_argument("--quality-users", type=int, default=5000, help="users of the retrieval proxy (default 5000)")
    ap.add_argument("--no-stage", action="store_true", help="skip the stage comparison")
    ap.add_argument("--levers", type=int, default=0, help="time the whole-text levers on this many texts (0: skip)")
    ap.add_argument("--texts", action="store_true", help="also compare the per-user and array template texts")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of --texts and --levers (default 2)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config([], [f"workspace={tmp}"])  # the profile and embedder defaults
        prof = cfg["profile"]
        ds, item_vectors, to_cluster = world(args)
        labels, t_cluster = timed(cluster_items, to_cluster, prof["n_clusters"], prof["seed"])
        split = ds.split()
        users = np.arange(ds.n_users, dtype=np.int64)
        if args.workspace and 0 < args.users < ds.n_users:
            users = np.sort(np.random.default_rng(0).choice(ds.n_users, args.users, replace=False))
        print(f"{args.workspace or 'synthetic'}: {len(users):,} of {ds.n_users:,} users, {ds.n_items_total:,} items")
        raw = make_raw_embedder(cfg, "profile")
        if hasattr(raw, "_threads"):
            raw._threads = args.threads
        if hasattr(raw, "load"):
            raw.load()  # export / load outside the timing
        if args.texts:
            titles = np.concatenate([[""], ds.items["title"].astype(str).to_numpy()])
            compare_texts(split, users, labels, titles, prof, args.rounds)
        if not args.no_stage:
            stage(args, ds, split, users, labels, t_cluster, item_vectors, prof, raw)
        if args.levers:
            titles = np.concatenate([[""], ds.items["title"].astype(str).to_numpy()])
            texts = template_profiles(group_by_cluster(split.train_items, split.train_offsets, users, labels), titles, prof)
            levers(raw, texts, args.levers, cfg["embed"]["batch_size"], args.rounds)


if __name__ == "__main__":
    main()
