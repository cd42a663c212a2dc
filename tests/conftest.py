"""Shared test fixtures. Keep this small; append fixtures others need at the end."""
from __future__ import annotations

from pathlib import Path

import pytest

# CI checks the repository out beside ../shared, which holds the real data sets.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def synth_ds():
    """A small prepared synthetic dataset (300 users, books 120 + movies 180 items). Do not mutate."""
    from llm4cdsr.data.synth import synth_dataset

    return synth_dataset(seed=0)


@pytest.fixture(scope="session")
def synth_world():
    """(interactions, items) frames of a small synthetic world, generic table form. Do not mutate."""
    from llm4cdsr.data.synth import generate_world

    return generate_world(n_users=300, n_items=(120, 180), seed=0)


@pytest.fixture(scope="session")
def food_kitchen_dir() -> Path:
    """The real Food x Kitchen set; tests using it skip when ../shared/data is absent."""
    path = SHARED_DATA / "food-kitchen"
    if not (path / "interactions.csv").is_file():
        pytest.skip(f"real data not found at {path} (CI keeps it at ../shared/data beside the clone)")
    return path
