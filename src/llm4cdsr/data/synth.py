"""A synthetic two-domain world with item text, for demos and for tests of every later stage.

The world has latent "tastes" that span both domains (the taste "outdoors" has hiking books and
adventure movies). Each item belongs to one taste and its title is drawn from that taste's
vocabulary, so text similarity follows taste. Each user likes a mixture of 1-3 tastes. A history
is generated step by step:
  - domain: overlap users switch domain now and then (runs of one domain); the others stay in one;
  - taste: usually the previous step's taste, sometimes a fresh draw from the user's mixture;
  - item: often the "sequel" of the previous item (its successor in a fixed chain of the taste's
    items, or the matching item of the other domain's chain after a domain switch), otherwise a
    popularity-weighted draw from the taste's items in that domain; no item twice per user.
The sequel rule gives the next item a strong dependence on the last one, so a sequential model
beats popularity clearly; popularity skew keeps popularity a fair baseline.

Everything is a pure function of the arguments (numpy Generator seeded once).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llm4cdsr.data.build import prepare_tables
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.io import write_json

# Per taste: its display name and its word pool. Pools do not share words, so title overlap
# between two items says they share a taste.
TASTES: dict[str, list[str]] = {
    "outdoors": ["hiking", "mountain", "trail", "wild", "camping", "river", "forest", "summit", "canyon", "wilderness"],
    "cooking": ["kitchen", "recipe", "baking", "spice", "bread", "feast", "chef", "flavor", "pastry", "harvest"],
    "space": ["galaxy", "star", "orbit", "planet", "rocket", "cosmic", "nebula", "astronaut", "lunar", "comet"],
    "history": ["empire", "ancient", "war", "kingdom", "dynasty", "medieval", "revolution", "pharaoh", "roman", "castle"],
    "romance": ["love", "heart", "wedding", "kiss", "passion", "summer", "letters", "darling", "promise", "moonlight"],
    "mystery": ["murder", "detective", "secret", "shadow", "clue", "crime", "midnight", "suspect", "alibi", "vanished"],
    "music": ["jazz", "guitar", "melody", "rhythm", "symphony", "band", "piano", "blues", "song", "concert"],
    "sports": ["football", "champion", "marathon", "goal", "league", "coach", "stadium", "victory", "tennis", "boxing"],
    "children": ["bunny", "dragon", "puppy", "fairy", "toy", "giant", "bedtime", "little", "rainbow", "pirate"],
    "science": ["quantum", "atom", "evolution", "genome", "physics", "brain", "climate", "robot", "energy", "molecule"],
    "art": ["painting", "canvas", "sculpture", "museum", "portrait", "color", "design", "gallery", "sketch", "brush"],
    "travel": ["journey", "island", "voyage", "paris", "road", "passport", "desert", "train", "coast", "safari"],
}
# Words that mark the domain, not the taste (shared by every taste of a domain).
DOMAIN_NOUNS: dict[str, list[str]] = {
    "books": ["guide", "novel", "handbook", "memoir", "stories", "chronicles"],
    "movies": ["film", "documentary", "saga", "movie", "series", "feature"],
}
GENERIC_NOUNS = ["edition", "collection", "set", "pack", "volume", "classic"]
# Filler words that carry no taste: a little noise so titles are not trivially separable.
FILLER = ["the", "of", "new", "complete", "great", "best", "my", "a", "last", "first"]

START_TIME = 1_500_000_000  # unix seconds (July 2017)


def _title(rng: np.random.Generator, taste_words: list[str], nouns: list[str], all_words: list[str]) -> str:
    n_taste = int(rng.integers(2, 4))
    words = list(rng.choice(taste_words, size=n_taste, replace=False))
    if rng.random() < 0.15:  # an off-taste word: text similarity is strong, not perfect
        words.append(str(rng.choice(all_words)))
    if rng.random() < 0.5:
        words.insert(0, str(rng.choice(FILLER)))
    words.append(str(rng.choice(nouns)))
    return " ".join(words).title()


def generate_world(
    n_users: int = 2000,
    n_items: tuple[int, int] = (400, 600),
    overlap: float = 0.3,
    domains: tuple[str, str] = ("books", "movies"),
    seed: int = 0,
    n_tastes: int = 10,
    min_len: int = 5,
    max_len: int = 30,
    sequel_prob: float = 0.6,
    stay_taste_prob: float = 0.75,
    stay_domain_prob: float = 0.7,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions, items) in the generic table form.

    interactions: user_id, item_id, domain, timestamp (unix seconds), chronological per user.
    items: item_id, domain, title, categories ("Books > Outdoors": the taste, as a category path).
    """
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be in [0, 1], got {overlap}")
    if not 1 <= n_tastes <= len(TASTES):
        raise ValueError(f"n_tastes must be in 1..{len(TASTES)}, got {n_tastes}")
    if domains[0] == domains[1]:
        raise ValueError("the two domains need different names")
    if min(n_items) < max(n_tastes, min_len):
        raise ValueError(f"each domain needs at least max(n_tastes, min_len) = {max(n_tastes, min_len)} items, got {tuple(n_items)}")
    if not 3 <= min_len <= max_len:
        raise ValueError(f"need 3 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = np.random.default_rng(seed)
    taste_names = list(TASTES)[:n_tastes]
    all_words = [w for t in taste_names for w in TASTES[t]]

    # ----- items ---------------------------------------------------------------------------
    item_rows: list[dict[str, Any]] = []
    taste_of: list[np.ndarray] = []  # per domain: taste of each local item (0-based index)
    popularity: list[np.ndarray] = []  # per domain: sampling weight of each item
    chains: list[list[np.ndarray]] = []  # per domain, per taste: items in "sequel" order
    for name, n in zip(domains, n_items):
        tastes = rng.permutation(np.arange(n) % n_tastes)  # every taste gets items
        nouns = DOMAIN_NOUNS.get(name, GENERIC_NOUNS)
        for local in range(n):
            t = taste_names[tastes[local]]
            item_rows.append({
                "item_id": f"{name}-{local:05d}",
                "domain": name,
                "title": _title(rng, TASTES[t], nouns, all_words),
                "categories": f"{name.title()} > {t.title()}",
            })
        taste_of.append(tastes)
        popularity.append(rng.lognormal(0.0, 1.0, size=n))
        chains.append([rng.permutation(np.flatnonzero(tastes == k)) for k in range(n_tastes)])
    # Position of each item in its taste's chain, to find sequels and cross-domain partners.
    chain_pos = [np.empty(n, dtype=np.int64) for n in n_items]
    for d in range(2):
        for chain in chains[d]:
            chain_pos[d][chain] = np.arange(len(chain))
    items = pd.DataFrame(item_rows)

    # ----- users ---------------------------------------------------------------------------
    p_domain_b = n_items[1] / (n_items[0] + n_items[1])
    rows_user: list[str] = []
    rows_item: list[str] = []
    rows_domain: list[str] = []
    rows_time: list[int] = []
    for u in range(n_users):
        k = int(rng.integers(1, 4))
        user_tastes = rng.choice(n_tastes, size=k, replace=False)
        mix = rng.dirichlet(np.ones(k))
        # Capped by the smaller domain so that no user can run out of unseen items.
        length = int(np.clip(min_len + rng.geometric(1.0 / 8.0) - 1, min_len, min(max_len, *n_items)))
        both = rng.random() < overlap
        if both:
            share_b = float(np.clip(rng.beta(2.0, 2.0), 0.2, 0.8))
            doms = np.empty(length, dtype=np.int64)
            doms[0] = int(rng.random() < share_b)
            for s in range(1, length):
                doms[s] = doms[s - 1] if rng.random() < stay_domain_prob else int(rng.random() < share_b)
            if doms.min() == doms.max():  # an overlap user must touch both domains
                doms[int(rng.integers(1, length))] = 1 - doms[0]
        else:
            doms = np.full(length, int(rng.random() < p_domain_b), dtype=np.int64)

        seen: set[tuple[int, int]] = set()
        prev: tuple[int, int] | None = None  # (domain, local item)
        taste = int(rng.choice(user_tastes, p=mix))
        t = START_TIME + int(rng.integers(0, 365 * 86400))
        for s in range(length):
            d = int(doms[s])
            if s > 0 and rng.random() >= stay_taste_prob:
                taste = int(rng.choice(user_tastes, p=mix))
            chain = chains[d][taste]
            item = -1
            if prev is not None and taste_of[prev[0]][prev[1]] == taste and rng.random() < sequel_prob:
                # The sequel: next in the chain within a domain; across domains, the item at the
                # matching chain position of the other domain (its "adaptation").
                pos = chain_pos[prev[0]][prev[1]] + (1 if prev[0] == d else 0)
                item = int(chain[pos % len(chain)])
            if item < 0 or (d, item) in seen:
                weights = popularity[d][chain].copy()
                weights[[i for i, c in enumerate(chain) if (d, int(c)) in seen]] = 0.0
                if weights.sum() == 0:  # the taste is exhausted in this domain: any unseen item
                    pool = np.array([i for i in range(n_items[d]) if (d, i) not in seen])
                    weights, chain = popularity[d][pool], pool
                item = int(chain[rng.choice(len(chain), p=weights / weights.sum())])
            seen.add((d, item))
            prev = (d, item)
            rows_user.append(f"u{u:05d}")
            rows_item.append(f"{domains[d]}-{item:05d}")
            rows_domain.append(domains[d])
            rows_time.append(t)
            t += 60 + int(rng.exponential(2 * 86400))
    interactions = pd.DataFrame({
        "user_id": rows_user,
        "item_id": rows_item,
        "domain": rows_domain,
        "timestamp": np.asarray(rows_time, dtype=np.int64),
    })
    return interactions, items


def synth_dataset(seed: int = 0, **kw: Any) -> PreparedDataset:
    """Generate a small world and prepare it in memory through the real prepare pipeline.

    Defaults are sized for tests (300 users, 120 + 180 items, well under a second); any
    `generate_world` argument may be passed. meta["synthetic"] is True.
    """
    kw.setdefault("n_users", 300)
    kw.setdefault("n_items", (120, 180))
    interactions, items = generate_world(seed=seed, **kw)
    domains = list(kw.get("domains", ("books", "movies")))
    return prepare_tables(interactions, items, {"domains": domains}, synthetic=True)


def synth_params(cfg_synth: dict[str, Any]) -> dict[str, Any]:
    """The `data.synth` config section as generate_world arguments."""
    return {
        "n_users": int(cfg_synth["users"]),
        "n_items": (int(cfg_synth["items_a"]), int(cfg_synth["items_b"])),
        "overlap": float(cfg_synth["overlap"]),
        "seed": int(cfg_synth["seed"]),
    }


def write_world(out: str | Path, **kw: Any) -> Path:
    """Write interactions.csv, items.csv and the synth.json marker into `out`; returns `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    interactions, items = generate_world(**kw)
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    interactions.to_csv(out / "interactions.csv", index=False)
    items.to_csv(out / "items.csv", index=False)
    write_json(out / "synth.json", {"synthetic": True, "generator": "llm4cdsr.data.synth.generate_world", "params": params})
    return out

