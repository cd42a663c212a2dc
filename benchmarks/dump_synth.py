"""A synthetic Amazon-2023-style dump (two categories' reviews + metadata, JSONL.gz) for prepare benchmarks.

    python benchmarks/dump_synth.py --lines 5000000 --out /tmp/llm4cdsr-dump-5m

The lines carry every field of the real 2023 dumps (review text, images, helpful votes; metadata
features, descriptions, details), so a reader parses what it would parse on the real files. Users
and items are drawn from heavy-tailed popularity, as review data is: a 5-core keeps a fraction of
the lines. Seeded and cached: a folder that already holds a dump of these parameters is reused.
"""
from __future__ import annotations

import argparse
import gzip
import json
import string
from pathlib import Path

import numpy as np

CATEGORIES = ("Grocery_and_Gourmet_Food", "Home_and_Kitchen")
WORDS = ["good", "great", "taste", "quality", "price", "works", "would", "buy", "again", "love", "product",
         "the", "and", "it", "is", "this", "for", "not", "very", "well", "made", "easy", "use", "clean", "fresh"]


def _ids(rng: np.random.Generator, n: int, width: int, alphabet: str, prefix: str = "") -> list[str]:
    """n distinct random ids of `width` characters (real dumps: 28-char user ids, 10-char asins)."""
    letters = np.array(list(alphabet))
    out: dict[str, None] = {}
    while len(out) < n:
        codes = letters[rng.integers(0, len(letters), size=(n, width - len(prefix)))]
        out.update(dict.fromkeys(prefix + "".join(row) for row in codes))
    return list(out)[:n]


def write_dump(out: Path, n_lines: int, seed: int = 0) -> dict:
    """Write `<Category>.jsonl.gz` and `meta_<Category>.jsonl.gz` for both categories under `out`
    (skipped when `out/dump.json` records the same parameters); returns the file lists and the
    number of review lines written (duplicates included)."""
    params = {"lines": n_lines, "seed": seed, "version": 1}
    marker = out / "dump.json"
    files = {"reviews": [str(out / f"{c}.jsonl.gz") for c in CATEGORIES],
             "meta": [str(out / f"meta_{c}.jsonl.gz") for c in CATEGORIES]}
    if marker.is_file() and json.loads(marker.read_text()).get("params") == params:
        return {**files, "review_lines": json.loads(marker.read_text())["review_lines"]}
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_users = max(10, n_lines // 5)
    n_items = max(10, n_lines // 40)  # per category
    users = _ids(rng, n_users, 28, string.ascii_uppercase + string.digits, "A")
    texts = [" ".join(rng.choice(WORDS, size=int(k))) for k in rng.integers(3, 120, size=2000)]
    # Heavy tails: a user's and an item's share of reviews fall off with their rank.
    user_p = 1.0 / np.arange(1, n_users + 1) ** 0.6
    user_p /= user_p.sum()
    item_p = 1.0 / np.arange(1, n_items + 1) ** 0.8
    item_p /= item_p.sum()
    start_ms, span_ms = 1_262_304_000_000, 13 * 365 * 86_400_000
    written = 0
    for d, category in enumerate(CATEGORIES):
        asins = _ids(rng, n_items, 10, string.ascii_uppercase + string.digits, "B0" if d == 0 else "B1")
        n = n_lines // 2 + (n_lines % 2 if d == 1 else 0)
        u = rng.choice(n_users, size=n, p=user_p)
        it = rng.choice(n_items, size=n, p=item_p)
        t = start_ms + rng.integers(0, span_ms, size=n)
        day = rng.random(n) < 0.3  # some times at whole days, so equal times (ties) occur as in dated data
        t[day] = t[day] // 86_400_000 * 86_400_000
        dup = rng.random(n) < 0.002  # a few exact duplicate lines, as real dumps have
        rating = rng.integers(1, 6, size=n)
        text_of = rng.integers(0, len(texts), size=n)
        with gzip.open(out / f"{category}.jsonl.gz", "wt", encoding="utf-8", compresslevel=6) as f:
            for k in range(n):
                a = asins[it[k]]
                line = (f'{{"rating": {rating[k]}.0, "title": "{texts[text_of[k]][:30]}", "text": "{texts[text_of[k]]}", '
                        f'"images": [], "asin": "{a}X", "parent_asin": "{a}", "user_id": "{users[u[k]]}", '
                        f'"timestamp": {t[k]}, "helpful_vote": {rating[k] - 1}, "verified_purchase": true}}\n')
                f.write(line)
                if dup[k]:
                    f.write(line)
            written += n + int(dup.sum())
        with gzip.open(out / f"meta_{category}.jsonl.gz", "wt", encoding="utf-8", compresslevel=6) as f:
            for k, a in enumerate(asins):
                if k % 50 == 49:
                    continue  # some reviewed items have no metadata, as in the real dumps
                row = {"main_category": category, "title": texts[k % len(texts)][:60].title(), "average_rating": 4.2,
                       "rating_number": int(k % 97), "features": [texts[(k + 1) % len(texts)][:80]],
                       "description": [texts[(k + 2) % len(texts)]], "price": None if k % 7 == 0 else round(1 + k % 50 * 0.5, 2),
                       "images": [], "videos": [], "store": f"Store {k % 300}", "categories": [category.replace("_", " "), "Sub"],
                       "details": {"Brand": f"Store {k % 300}"}, "parent_asin": a, "bought_together": None}
                f.write(json.dumps(row) + "\n")
    marker.write_text(json.dumps({"params": params, "review_lines": written, **files}, indent=2) + "\n")
    return {**files, "review_lines": written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=5_000_000, help="review lines over both categories")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(write_dump(args.out, args.lines, args.seed), indent=2))


if __name__ == "__main__":
    main()
