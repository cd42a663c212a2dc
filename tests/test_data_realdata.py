"""A seeded subsample of the real Food x Kitchen set through the table importer."""
import numpy as np
import pandas as pd
import pytest

from llm4cdsr.data.prepare import build_dataset, dataset_stats
from llm4cdsr.data.raw import read_tables

pytestmark = pytest.mark.realdata


def test_food_kitchen_subsample(food_kitchen_dir, tmp_path):
    inter = pd.read_csv(food_kitchen_dir / "interactions.csv", dtype={"user_id": str, "item_id": str, "domain": str})
    items = pd.read_csv(food_kitchen_dir / "items.csv", dtype=str, keep_default_na=False)
    users = np.random.default_rng(0).choice(inter["user_id"].unique(), size=600, replace=False)
    # Shuffled rows: the importer must restore each history's order from `position`.
    sample = inter[inter["user_id"].isin(users)].sample(frac=1.0, random_state=0)
    sample.to_csv(tmp_path / "interactions.csv", index=False)
    items[items["item_id"].isin(sample["item_id"])].to_csv(tmp_path / "items.csv", index=False)

    ds = build_dataset(read_tables(tmp_path / "interactions.csv", tmp_path / "items.csv"))
    stats = dataset_stats(ds)
    assert ds.domains == ("food", "kitchen") and stats["users"] == 600
    assert stats["interactions"]["food"] == int((sample["domain"] == "food").sum())
    assert stats["interactions"]["kitchen"] == int((sample["domain"] == "kitchen").sum())
    assert stats["empty_titles"] == 0 and stats["history_length"]["min"] >= 5
    both = sample.groupby("user_id")["domain"].nunique().eq(2).sum()
    assert stats["overlap_users"] == both
    # Positions come back as 0..n-1 in order for every user.
    expected = np.concatenate([np.arange(n) for n in ds.lengths])
    np.testing.assert_array_equal(ds.seq_times, expected)
    ref = sample.sort_values(["user_id", "position"])
    lookup = ds.item_lookup()
    np.testing.assert_array_equal(ds.seq_items, ref["item_id"].map(lookup).to_numpy())
