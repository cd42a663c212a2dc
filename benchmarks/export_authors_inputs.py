"""Export one llm4cdsr workspace's exact inputs into the file layout the authors' public LLM4CDSR code
reads, so that both implementations can be trained on the same users, splits, item vectors and
profile vectors (issue 19: "the authors' causal setting, side by side").

    python benchmarks/export_authors_inputs.py --workspace workspace-food-kitchen \
        --out /tmp/authors/src/data/amazon/handled [--users 15000] [--seed 42]

Nothing of the authors' code is used or needed here; the layout below is what their data loader and
model open (a `--dataset D` run reads `data/D/handled/`; the names are set with --inter_file,
--llm_emb_file and --user_emb_file on their command line). Written into --out:

  <inter>.pkl           pickle of a tuple (inter_seq, domain_seq): two dicts keyed by user number
                        1..U (int, in workspace user order, the subsample's order when --users is
                        given); inter_seq[u] is an int64 numpy array of the user's whole
                        chronological history as PER-DOMAIN LOCAL ids (1-based), domain_seq[u] an
                        int64 numpy array of the same length, 0 for domain A and 1 for domain B.
                        Their loader splits it leave-one-out (last = test, second to last =
                        validation), the same split as `PreparedDataset.split()`.
  id_map.json           {"user_dict": {"str2id": {raw user id: 1..U}, "id2str": ...},
                         "item_dict": {"item_count": {"0": n_A, "1": n_B},
                                       "str2id": {raw item id: local id}  per domain "0"/"1"},
                         "domains": [A, B]}
  <emb>_all.pkl         float32 (n_A + n_B, d_g): the global view (embeddings/pca.safetensors
                        "global", or the raw vectors with --global-view raw) without the padding
                        row: row k is global item id k + 1 (A first, then B).
  <emb>_A_pca128.pkl    float32 (n_A, 128): domain A's local PCA view, row k = local id k + 1.
  <emb>_B_pca128.pkl    float32 (n_B, 128): domain B's local PCA view, row k = local id k + 1.
                        (Their model opens these names whatever the width; the width is ours, H.)
  <user_emb>.pkl        float32 (U, D): the profile embedding of each exported user (profiles/
                        embeddings.npy rows of the kept users, in export order): row i belongs to
                        user number i + 1, which is what their training batches index it by.
                        Skipped with --no-profiles.
  export.json           what was exported from where: workspace, subsample (users, seed, indices
                        file), counts, shapes, the embedding and profile metadata, file checksums.
  users.npy             the exported users' workspace indices (int64, export order).

The subsample is `llm4cdsr.experiments.subsample_indices(n_users, --users, --seed)`, the one the
overlap experiment draws, so an llm4cdsr run on `subsample_users(dataset, --users, --seed)` sees the
same users in the same order.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
from pathlib import Path

import numpy as np

from safetensors.numpy import load_file

from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.experiments import subsample_indices
from llm4cdsr.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dump(obj, path: Path) -> None:
    # The one pickle writer of the repository, outside the package: the authors' loader reads
    # pickles only. It writes, never reads, and only arrays and dicts of ints and strings.
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    tmp.replace(path)


def _item_views(embed_dir: Path, domains) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(raw (N + 1, D), global PCA (N + 1, d_g), local PCA per domain (n_d + 1, H)), read as the
    embed stage wrote them (llm4cdsr.workspace's layout; row 0 is padding everywhere)."""
    if not (embed_dir / "meta.json").is_file():
        raise SystemExit(f"{embed_dir}: no item embeddings; run `llm4cdsr embed` first")
    tensors = load_file(str(embed_dir / "pca.safetensors"))
    raw = np.load(embed_dir / "items.npy")
    return raw, tensors["global"], (tensors[f"local.{domains[0]}"], tensors[f"local.{domains[1]}"])


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def export(workspace: Path, out: Path, users: int, seed: int, inter_name: str, emb_name: str, user_emb_name: str,
           profiles_dir: Path | None, global_view: str) -> dict:
    ws = Workspace(workspace)
    ds = PreparedDataset.load(ws.dataset_dir)
    n_a, n_b = ds.n_items
    keep = subsample_indices(ds.n_users, users, seed)
    if ds.lengths[keep].min() < 3:
        raise SystemExit("a kept user has fewer than 3 interactions; their loader would drop it and shift the profile rows")
    out.mkdir(parents=True, exist_ok=True)

    # interactions: local ids + domain flags, users numbered 1..U in export order
    inter_seq, domain_seq = {}, {}
    for number, u in enumerate(keep, start=1):
        seq = ds.sequence(int(u)).astype(np.int64)
        dom = ds.domain_of(seq).astype(np.int64)
        inter_seq[number] = np.where(dom == 1, seq - n_a, seq).astype(np.int64)
        domain_seq[number] = dom
    _dump((inter_seq, domain_seq), out / f"{inter_name}.pkl")

    items = ds.items
    local = items["local_id"].astype(int).to_numpy()
    dom_items = ds.domain_of(items["global_id"].to_numpy())
    raw_items = items["raw_id"].astype(str).to_numpy()
    id_map = {
        "user_dict": {"str2id": {str(ds.user_ids[u]): i for i, u in enumerate(keep, start=1)},
                      "id2str": {str(i): str(ds.user_ids[u]) for i, u in enumerate(keep, start=1)}},
        "item_dict": {"item_count": {"0": int(n_a), "1": int(n_b)},
                      "str2id": {str(d): {raw_items[k]: int(local[k]) for k in np.flatnonzero(dom_items == d)} for d in (0, 1)}},
        "domains": list(ds.domains),
    }
    (out / "id_map.json").write_text(json.dumps(id_map), encoding="utf-8")
    np.save(out / "users.npy", keep.astype(np.int64))

    # item vectors: drop the padding row (their model prepends its own zero row)
    raw, global_pca, local_pca = _item_views(ws.embed_dir, ds.domains)
    global_rows = global_pca if global_view == "pca" else raw
    if global_rows.shape[0] != n_a + n_b + 1 or local_pca[0].shape[0] != n_a + 1 or local_pca[1].shape[0] != n_b + 1:
        raise SystemExit("item vectors do not match the dataset's item counts")
    _dump(np.ascontiguousarray(global_rows[1:], dtype=np.float32), out / f"{emb_name}_all.pkl")
    _dump(np.ascontiguousarray(local_pca[0][1:], dtype=np.float32), out / f"{emb_name}_A_pca128.pkl")
    _dump(np.ascontiguousarray(local_pca[1][1:], dtype=np.float32), out / f"{emb_name}_B_pca128.pkl")

    files = [f"{inter_name}.pkl", "id_map.json", "users.npy", f"{emb_name}_all.pkl", f"{emb_name}_A_pca128.pkl", f"{emb_name}_B_pca128.pkl"]
    profile_meta = None
    if profiles_dir is not None:
        profiles = np.load(profiles_dir / "embeddings.npy", mmap_mode="r")
        if profiles.shape[0] != ds.n_users:
            raise SystemExit(f"{profiles_dir}: {profiles.shape[0]} profile rows for {ds.n_users} users")
        rows = np.asarray(profiles[keep], dtype=np.float32)
        if not np.isfinite(rows).all():
            raise SystemExit("a kept user's profile embedding is not finite; their code has no way to skip it")
        _dump(np.ascontiguousarray(rows), out / f"{user_emb_name}.pkl")
        files.append(f"{user_emb_name}.pkl")
        profile_meta = _read_json(profiles_dir / "meta.json")

    record = {
        "workspace": str(Path(workspace).resolve()),
        "subsample": {"users": int(len(keep)), "of": int(ds.n_users), "seed": int(seed),
                      "drawn_by": "llm4cdsr.experiments.subsample_indices"},
        "domains": list(ds.domains),
        "item_count": {"0": int(n_a), "1": int(n_b)},
        "interactions": int(ds.lengths[keep].sum()),
        "users_with_both_domains": int(sum(len(set(d.tolist())) == 2 for d in domain_seq.values())),
        "global_view": global_view,
        "global_dim": int(global_rows.shape[1]),
        "local_dim": int(local_pca[0].shape[1]),
        "names": {"inter_file": inter_name, "llm_emb_file": emb_name, "user_emb_file": user_emb_name if profiles_dir else None},
        "embedding_meta": _read_json(ws.embed_dir / "meta.json"),
        "profile_meta": profile_meta,
        "sha256": {name: _sha256(out / name) for name in files},
    }
    (out / "export.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default=str(ROOT / "workspace-food-kitchen"))
    parser.add_argument("--out", required=True, help="the authors' data/<dataset>/handled/ folder (created if missing)")
    parser.add_argument("--users", type=int, default=15000, help="seeded user subsample (0 = every user)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the user subsample")
    parser.add_argument("--inter-file", default="food_kitchen", help="their --inter_file")
    parser.add_argument("--emb-name", default="itm_emb_np", help="their --llm_emb_file")
    parser.add_argument("--user-emb-name", default="usr_profile_emb", help="their --user_emb_file")
    parser.add_argument("--profiles", default="", help="profile folder (default <workspace>/profiles)")
    parser.add_argument("--no-profiles", action="store_true", help="export no profile vectors")
    parser.add_argument("--global-view", choices=("pca", "raw"), default="pca",
                        help="global item vectors: the workspace's global PCA view (what llm4cdsr trains on) or the raw embeddings")
    args = parser.parse_args()
    ws = Path(args.workspace)
    profiles = None if args.no_profiles else (Path(args.profiles) if args.profiles else Workspace(ws).profile_dir)
    if profiles is not None and not (profiles / "embeddings.npy").is_file():
        parser.error(f"{profiles}: no embeddings.npy (run the profile stage first, or pass --no-profiles)")
    record = export(ws, Path(args.out), args.users, args.seed, args.inter_file, args.emb_name, args.user_emb_name,
                    profiles, args.global_view)
    print(json.dumps({k: record[k] for k in ("subsample", "item_count", "interactions", "users_with_both_domains",
                                             "global_view", "global_dim", "local_dim", "names")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
