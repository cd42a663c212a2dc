import numpy as np
import pandas as pd
import pytest

from llm4cdsr.config import load_config
from llm4cdsr.llm.texts import TemplateError, item_texts, render


def _items(**extra):
    data = {"global_id": [1, 2], "domain": ["food", "kitchen"], "local_id": [1, 1], "raw_id": ["a", "b"],
            "title": ["Green Tea", "Pan"]}
    data.update(extra)
    return pd.DataFrame(data)


def test_title_only_matches_reference_wording():
    texts = item_texts(_items(), load_config())
    assert texts == ["The food item has the following attributes: name is Green Tea.",
                     "The kitchen item has the following attributes: name is Pan."]


def test_missing_and_empty_fields_are_left_out():
    items = _items(brand=["Ito En", None], price=[float("nan"), 12.5], categories=[["Tea", "Drinks"], []],
                   description=["", "  "])
    texts = item_texts(items, load_config())
    assert texts[0] == ("The food item has the following attributes: name is Green Tea; brand is Ito En; "
                        "categories are Tea, Drinks.")
    assert texts[1] == "The kitchen item has the following attributes: name is Pan; price is 12.5."


def test_per_domain_template_and_bounds():
    cfg = load_config([], ["embed.templates={kitchen: 'Kitchen tool: {title}[ by {brand}]'}",
                           "embed.max_field_chars=5", "embed.max_chars=30"])
    items = _items(brand=["Ito En", "Lodge &amp; Co"], description=["x" * 500, "y" * 500])
    food, kitchen = item_texts(items, cfg)
    assert kitchen == "Kitchen tool: Pan by Lodge..."  # HTML entity decoded, then cut to 5 characters
    assert len(food) <= 30 and food.startswith("The food item")


def test_optional_segment_needs_every_field():
    assert render("A {title}[ ({brand}, {price})].", {"title": "x", "brand": "b"}) == "A x."
    assert render("A {title}[ ({brand}, {price})].", {"title": "x", "brand": "b", "price": "1"}) == "A x (b, 1)."


def test_bad_template_is_reported():
    with pytest.raises(TemplateError):
        render("A [{title}", {"title": "x"})
    with pytest.raises(TemplateError):
        render("A [[{title}]]", {"title": "x"})


def test_numpy_values():
    items = _items(price=np.array([np.float64(3.0), np.nan]))
    assert "price is 3.0" in item_texts(items, load_config())[0]
