import numpy as np
import pandas as pd
import pytest

from llm4cdsr.data.synth import generate_world, write_world


def test_same_seed_same_world_other_seed_other_world():
    a = generate_world(n_users=80, n_items=(40, 60), seed=3)
    b = generate_world(n_users=80, n_items=(40, 60), seed=3)
    c = generate_world(n_users=80, n_items=(40, 60), seed=4)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert not a[0].equals(c[0])


def test_world_shape(synth_world):
    inter, items = synth_world
    assert list(inter.columns) == ["user_id", "item_id", "domain", "timestamp"]
    assert {"item_id", "domain", "title", "categories"} <= set(items.columns)
    assert items["item_id"].is_unique
    assert set(inter["item_id"]) <= set(items["item_id"])
    lengths = inter.groupby("user_id").size()
    assert lengths.min() >= 5 and lengths.max() <= 30
    assert not inter.duplicated(["user_id", "item_id"]).any()
    both = inter.groupby("user_id")["domain"].nunique() == 2
    assert 0.2 < both.mean() < 0.4  # overlap=0.3
    assert (inter.groupby("user_id")["timestamp"].diff().dropna() > 0).all()


def test_title_words_follow_taste(synth_world):
    _, items = synth_world
    words = [set(t.lower().split()) for t in items["title"]]
    taste = items["categories"].str.split(" > ").str[1].to_numpy()
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(items), size=(4000, 2))
    jac = np.array([len(words[i] & words[j]) / len(words[i] | words[j]) for i, j in pairs])
    same = taste[pairs[:, 0]] == taste[pairs[:, 1]]
    # Same-taste titles share words far more often than titles of different tastes.
    assert jac[same].mean() > 4 * jac[~same].mean()


def test_next_item_is_learnable_beyond_popularity(synth_ds):
    """A first-order transition count model must beat popularity clearly on the test target."""
    ds, split = synth_ds, synth_ds.split()
    n = ds.n_items_total
    trans = np.zeros((n + 1, n + 1))
    pop = np.zeros(n + 1)
    for u in range(ds.n_users):
        seq = np.r_[split.train_sequence(u), split.valid_target[u]]
        np.add.at(pop, seq, 1)
        np.add.at(trans, (seq[:-1], seq[1:]), 1)
    rng = np.random.default_rng(0)
    hits = np.zeros(2)
    for u in range(ds.n_users):
        target = split.test_target[u]
        lo, hi = (1, ds.n_items[0]) if ds.domain_of(target) == 0 else (ds.n_items[0] + 1, n)
        pool = np.setdiff1d(np.arange(lo, hi + 1), ds.sequence(u))
        cands = np.r_[target, rng.choice(pool, size=50, replace=False)]
        for k, score in enumerate((pop[cands], trans[split.valid_target[u], cands] + 1e-3 * pop[cands])):
            hits[k] += (score[1:] > score[0]).sum() < 10
    hit_pop, hit_seq = hits / ds.n_users
    assert hit_seq > hit_pop + 0.2, (hit_pop, hit_seq)


def test_synth_dataset_is_prepared_and_marked(synth_ds):
    assert synth_ds.meta["synthetic"] is True
    assert synth_ds.domains == ("books", "movies")
    assert synth_ds.lengths.min() >= 3
    synth_ds.validate()


def test_write_world_writes_marker(tmp_path):
    out = write_world(tmp_path / "w", n_users=30, n_items=(20, 30), seed=1)
    assert (out / "interactions.csv").is_file() and (out / "items.csv").is_file()
    import json

    marker = json.loads((out / "synth.json").read_text())
    assert marker["synthetic"] is True and marker["params"]["n_users"] == 30


def test_bad_arguments():
    with pytest.raises(ValueError, match="overlap"):
        generate_world(overlap=1.5)
    with pytest.raises(ValueError, match="different names"):
        generate_world(domains=("x", "x"))


def test_unseen_draw_is_numpys_weighted_choice():
    """The generator's O(log n) draw picks the index rng.choice would pick from the same uniform
    draw over the weights with the seen positions zeroed (the quadratic code it replaced)."""
    from llm4cdsr.data.synth import _draw_unseen

    rng = np.random.default_rng(7)
    for _ in range(2000):
        n = int(rng.integers(1, 40))
        weights = rng.lognormal(0.0, 1.0, size=n)
        seen = list(rng.choice(n, size=int(rng.integers(0, n)), replace=False))
        u = float(rng.random())
        zeroed = weights.copy()
        zeroed[seen] = 0.0
        p = zeroed / zeroed.sum()
        cdf = p.cumsum()
        cdf /= cdf[-1]
        want = int(cdf.searchsorted(u, side="right"))  # what Generator.choice(n, p=p) does with u
        assert _draw_unseen(np.cumsum(weights).tolist(), weights.tolist(), seen, u) == want


def test_taste_draw_is_numpys_choice():
    """The generator draws a user's taste by bisecting one uniform draw in the normalised running
    sum of the mixture: rng.choice(tastes, p=mix) on the same stream gives the same taste."""
    from bisect import bisect_right

    for seed in range(300):
        mix = np.random.default_rng(seed).dirichlet(np.ones(1 + seed % 3))
        cdf = mix.cumsum()
        cdf = (cdf / cdf[-1]).tolist()
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        for _ in range(20):
            assert bisect_right(cdf, a.random()) == int(b.choice(len(mix), p=mix))


# The 2,000-user demo world (`llm4cdsr run` without data) as the quadratic generator made it,
# measured before it was made linear (the linear one reproduced it byte for byte).
DEMO_STATS = {"users": 2000, "items_used": {"books": 400, "movies": 600},
              "interactions": {"books": 9444, "movies": 13847}, "gini": {"books": 0.2853, "movies": 0.3220},
              "top10_share": {"books": 0.2213, "movies": 0.2408}, "overlap_share": 0.2915, "mean_length": 11.6455}


def test_demo_world_keeps_its_statistics():
    from llm4cdsr.data.synth import world_stats

    got = world_stats(*generate_world(n_users=2000, n_items=(400, 600), overlap=0.3, seed=0))
    assert got["users"] == DEMO_STATS["users"]
    assert got["items_used"] == DEMO_STATS["items_used"]
    for d in ("books", "movies"):
        assert got["interactions"][d] == pytest.approx(DEMO_STATS["interactions"][d], rel=0.03)
        assert got["gini"][d] == pytest.approx(DEMO_STATS["gini"][d], abs=0.02)
        assert got["top10_share"][d] == pytest.approx(DEMO_STATS["top10_share"][d], abs=0.02)
    assert got["overlap_share"] == pytest.approx(DEMO_STATS["overlap_share"], abs=0.02)
    assert got["mean_length"] == pytest.approx(DEMO_STATS["mean_length"], rel=0.03)
