"""torch vs ONNX Runtime int8 (`embed.backend=onnx`) on the same texts, side by side in one run.

Texts: 2,000 Food x Kitchen item texts (the preset's template over items.csv titles) and 2,000
template-like user profiles (the profile stage's own template code over 2,000 Food x Kitchen
users' histories, one cluster per domain instead of k-means clusters: the same format and length
as the real ones). Both backends get the same texts in the same batches (sorted by length, batch
64, as the embed stage batches them), with the same number of threads. The work is cut into
slices that alternate between the backends (torch, onnx, onnx, torch, ...), so load from other
processes hits both alike. Printed: texts/s of each, the ratio, and the cosine between their
vectors (mean and min), against the targets (>= 2.5x, mean cosine >= 0.99). Beside texts per second
of wall time, texts per CPU-second of the process (all threads): on a machine shared with other
jobs, that one moves less with their load.

    python benchmarks/bench_embed_onnx.py [--n 2000] [--slice 250] [--threads 0] [--export-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from llm4cdsr.config import load_config  # noqa: E402
from llm4cdsr.llm.embedders import OnnxEmbedder, SentenceTransformerEmbedder  # noqa: E402
from llm4cdsr.llm.profiling import split_by_cluster, template_profile  # noqa: E402
from llm4cdsr.llm.texts import item_texts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "food-kitchen"


def item_set(cfg: dict, n: int) -> list[str]:
    items = pd.read_csv(DATA / "items.csv", dtype=str, nrows=n)
    return item_texts(items, cfg)


def profile_set(cfg: dict, n: int, seed: int = 0) -> list[str]:
    items = pd.read_csv(DATA / "items.csv", dtype=str)
    inter = pd.read_csv(DATA / "interactions.csv", dtype={"user_id": str, "item_id": str})
    order = "timestamp" if "timestamp" in inter.columns else "position"
    inter = inter.sort_values(["user_id", order], kind="stable")
    gid = {raw: i + 1 for i, raw in enumerate(items["item_id"])}  # a global id per item, 0 = padding
    titles = np.concatenate([[""], items["title"].fillna("").astype(str).to_numpy()])
    labels = np.concatenate([[0], (items["domain"] != items["domain"].iloc[0]).astype(int).to_numpy()])  # cluster = domain
    users = inter["user_id"].unique()
    chosen = np.random.default_rng(seed).choice(users, size=min(n, len(users)), replace=False)
    histories = inter[inter["user_id"].isin(set(chosen))].groupby("user_id", sort=False)["item_id"]
    texts = []
    for _, ids in histories:
        history = np.array([gid[i] for i in ids if i in gid], dtype=np.int64)
        texts.append(template_profile(split_by_cluster(history, labels), titles, cfg["profile"]))
    return texts


def batches(texts: list[str], size: int) -> list[list[int]]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)  # as the stage batches
    return [order[i:i + size] for i in range(0, len(order), size)]


def run(embedder, texts: list[str], size: int) -> tuple[np.ndarray, float, float]:
    """(vectors, wall seconds, CPU seconds of this process: every thread of torch or ONNX Runtime)."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches(texts, size):
        out[b] = embedder.embed_batch([texts[i] for i in b])
    return out, time.perf_counter() - t0, time.process_time() - c0


def compare(name: str, texts: list[str], torch_emb, onnx_emb, slice_size: int, batch: int) -> dict:
    wall = {"torch": 0.0, "onnx": 0.0}
    cpu = {"torch": 0.0, "onnx": 0.0}
    vectors = {"torch": [], "onnx": []}
    for j, start in enumerate(range(0, len(texts), slice_size)):
        part = texts[start:start + slice_size]
        pair = [("torch", torch_emb), ("onnx", onnx_emb)]
        for backend, emb in (pair if j % 2 == 0 else pair[::-1]):
            v, w, c = run(emb, part, batch)
            wall[backend] += w
            cpu[backend] += c
            vectors[backend].append(v)
    a, b = (np.concatenate(vectors[k]) for k in ("torch", "onnx"))
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    row = {"set": name, "texts": len(texts), "mean_chars": float(np.mean([len(t) for t in texts])),
           "cos_mean": float(cos.mean()), "cos_min": float(cos.min())}
    for k in ("torch", "onnx"):
        row[k] = len(texts) / wall[k]  # texts per second of wall time
        row[f"{k}_cpu"] = len(texts) / cpu[k]  # texts per CPU-second (all threads): steadier under load
    row["ratio"], row["ratio_cpu"] = row["onnx"] / row["torch"], row["onnx_cpu"] / row["torch_cpu"]
    print(f"{name:9s} {len(texts):5d} texts, mean {row['mean_chars']:4.0f} chars | texts/s: torch {row['torch']:7.1f}, "
          f"onnx int8 {row['onnx']:7.1f}, ratio {row['ratio']:.2f}x | per CPU-second: torch {row['torch_cpu']:6.1f}, "
          f"onnx int8 {row['onnx_cpu']:6.1f}, ratio {row['ratio_cpu']:.2f}x | cosine mean {row['cos_mean']:.4f}, "
          f"min {row['cos_min']:.4f}", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="texts per set")
    p.add_argument("--slice", type=int, default=250, help="texts per alternating slice")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="threads for both backends (0 = torch's default)")
    p.add_argument("--export-dir", help="where the int8 model is (or is exported to); default: a temporary folder")
    args = p.parse_args()
    if not (DATA / "items.csv").is_file():
        raise SystemExit(f"needs the Food x Kitchen set at {DATA}")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    cfg = load_config([str(ROOT / "configs" / "food-kitchen.yaml")], ["workspace=unused"])
    sets = {"titles": item_set(cfg, args.n), "profiles": profile_set(cfg, args.n)}

    with tempfile.TemporaryDirectory() as tmp:
        torch_emb = SentenceTransformerEmbedder("", "cpu", args.batch_size, stage="bench")
        onnx_emb = OnnxEmbedder("", args.export_dir or tmp, args.batch_size, threads, stage="bench")
        t0 = time.perf_counter()
        onnx_emb.load()  # exports once when the folder has no model yet
        load_s = time.perf_counter() - t0
        for emb in (torch_emb, onnx_emb):  # warm-up: first calls allocate
            emb.embed_batch(sets["titles"][:args.batch_size])
        print(f"model all-MiniLM-L6-v2 (packaged); {threads} threads each; batch {args.batch_size}; "
              f"slices of {args.slice} alternating; ONNX {onnx_emb.params['tokens_per_run']} tokens a run, "
              f"load/export {load_s:.1f} s ({onnx_emb.export_dir})")
        rows = [compare(name, texts, torch_emb, onnx_emb, args.slice, args.batch_size) for name, texts in sets.items()]
    n = sum(r["texts"] for r in rows)
    total = {k: n / sum(r["texts"] / r[k] for r in rows) for k in ("torch", "onnx", "torch_cpu", "onnx_cpu")}
    ratio, ratio_cpu = total["onnx"] / total["torch"], total["onnx_cpu"] / total["torch_cpu"]
    cos_mean = float(np.mean([r["cos_mean"] for r in rows]))
    print(f"all       {n:5d} texts | texts/s: torch {total['torch']:7.1f}, onnx int8 {total['onnx']:7.1f}, ratio "
          f"{ratio:.2f}x (target >= 2.5: {'PASS' if ratio >= 2.5 else 'FAIL'}) | per CPU-second: ratio {ratio_cpu:.2f}x | "
          f"mean cosine {cos_mean:.4f} (target >= 0.99: {'PASS' if cos_mean >= 0.99 else 'FAIL'})")


if __name__ == "__main__":
    main()
