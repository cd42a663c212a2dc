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
The cost is linear in users (O(log chain) per interaction): 40,000 users with 20,000 items in
11 s where the first version, a pass over the taste's whole chain per interaction, took 220 s;
it makes the same worlds draw for draw (tests/test_data_synth.py).
"""
from __future__ import annotations

from bisect import bisect_right
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


def _draw_unseen(cum: list[float], weights: list[float], seen: list[int], u: float) -> int:
    """Index drawn from a chain by popularity with the seen positions' weights set to zero.

    The same index `rng.choice(len(cum), p=w / w.sum())` gives for the uniform draw `u` (w = the
    weights with the seen ones zeroed; up to the last bit of rounding), found without building w:
    the zeroed weights shift the cumulative sum by the seen weights before each position, so the
    answer is searched segment by segment between the (few) seen positions, each segment by
    bisection on the unchanged running sum `cum`. Plain lists: numpy's per-call overhead on
    scalars was most of the cost.
    """
    order = sorted(seen)
    removed = [weights[p] for p in order]
    target = u * (cum[-1] - sum(removed))
    shift = 0.0  # weight of the seen positions before the current segment
    lo = 0
    for p, w in zip(order + [len(cum)], removed + [0.0]):
        # First index i >= lo with cum[i] - shift > target; it is the answer when it lies before p.
        i = max(bisect_right(cum, target + shift), lo)
        if i < p:
            return i
        shift += w
        lo = p + 1
    # Only reached when rounding puts the target at the very top: the last unseen position.
    return max(k for k in range(len(cum)) if k not in set(order))


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
    # Per domain and taste: the chain's popularity weights and their running sums (the draw's CDF).
    # Python lists for the per-interaction loop below: indexing a numpy array for one scalar costs
    # ten times a list's.
    chain_w = [[popularity[d][c].tolist() for c in chains[d]] for d in range(2)]
    chain_cum = [[np.cumsum(popularity[d][c]).tolist() for c in chains[d]] for d in range(2)]
    chain_list = [[c.tolist() for c in chains[d]] for d in range(2)]
    taste_list = [taste_of[d].tolist() for d in range(2)]
    pos_list = [chain_pos[d].tolist() for d in range(2)]
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
        # rng.choice(user_tastes, p=mix) is a bisection of one uniform draw in this normalised
        # running sum (numpy's own method, so the same draws give the same tastes), without its
        # per-call checks of p.
        mix_cdf = mix.cumsum()
        mix_cdf = (mix_cdf / mix_cdf[-1]).tolist()
        tastes_k = user_tastes.tolist()
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
        # Per (domain, taste): the chain positions this user has seen, so the weighted draw below
        # costs O(log chain + seen) instead of a pass over the whole chain.
        seen_pos: dict[tuple[int, int], list[int]] = {}
        prev: tuple[int, int] | None = None  # (domain, local item)
        taste = tastes_k[bisect_right(mix_cdf, rng.random())]
        t = START_TIME + int(rng.integers(0, 365 * 86400))
        for d in doms.tolist():
            if prev is not None and rng.random() >= stay_taste_prob:
                taste = tastes_k[bisect_right(mix_cdf, rng.random())]
            chain = chain_list[d][taste]
            item = -1
            if prev is not None and taste_list[prev[0]][prev[1]] == taste and rng.random() < sequel_prob:
                # The sequel: next in the chain within a domain; across domains, the item at the
                # matching chain position of the other domain (its "adaptation").
                pos = pos_list[prev[0]][prev[1]] + (1 if prev[0] == d else 0)
                item = chain[pos % len(chain)]
            if item < 0 or (d, item) in seen:
                pos_seen = seen_pos.get((d, taste), [])
                if len(pos_seen) < len(chain):
                    item = chain[_draw_unseen(chain_cum[d][taste], chain_w[d][taste], pos_seen, rng.random())]
                else:  # the taste is exhausted in this domain (small worlds only): any unseen item
                    pool = np.array([i for i in range(n_items[d]) if (d, i) not in seen])
                    weights = popularity[d][pool]
                    item = int(pool[rng.choice(len(pool), p=weights / weights.sum())])
            seen_pos.setdefault((d, taste_list[d][item]), []).append(pos_list[d][item])
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



def world_stats(interactions: pd.DataFrame, items: pd.DataFrame) -> dict[str, Any]:
    """Summary figures of a world, to check that a change of the generator keeps its character:
    users, items used and interactions per domain, the share of two-domain users, the mean
    history length, and per domain the popularity skew (Gini of the items' interaction counts,
    and the share of interactions that go to the top 10% of items)."""
    out: dict[str, Any] = {"users": int(interactions["user_id"].nunique()), "items_used": {}, "interactions": {},
                           "gini": {}, "top10_share": {}}
    for d, rows in interactions.groupby("domain", sort=True):
        catalogue = items.loc[items["domain"] == d, "item_id"]
        counts = np.sort(rows["item_id"].value_counts().reindex(catalogue, fill_value=0).to_numpy())  # ascending
        n = len(counts)
        out["items_used"][d] = int((counts > 0).sum())
        out["interactions"][d] = int(len(rows))
        out["gini"][d] = float((2 * np.arange(1, n + 1) - n - 1) @ counts / (n * counts.sum()))
        out["top10_share"][d] = float(counts[-max(1, n // 10):].sum() / counts.sum())
    out["overlap_share"] = float((interactions.groupby("user_id")["domain"].nunique() == 2).mean())
    out["mean_length"] = float(interactions.groupby("user_id").size().mean())
    return out
