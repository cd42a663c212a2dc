import pytest
import yaml

from llm4cdsr.config import ConfigError, load_config, parse_override


def test_defaults_have_top_level_keys():
    cfg = load_config()
    assert cfg["seed"] == 42
    assert isinstance(cfg["workspace"], str)


def test_layers_apply_in_order(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"seed": 1, "workspace": "a"}))
    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump({"base": "base.yaml", "seed": 2}))
    cfg = load_config([user], ["workspace=b"])
    assert cfg["seed"] == 2 and cfg["workspace"] == "b"


def test_unknown_key_names_the_key_and_file(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("sead: 3\n")
    with pytest.raises(ConfigError, match=r"user.yaml: unknown key 'sead'"):
        load_config([user])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="seed must be of type int"):
        load_config([], ["seed=abc"])


def test_override_parsing():
    assert parse_override("a.b.c=1e-3") == {"a": {"b": {"c": 1e-3}}} or parse_override("a.b.c=1e-3") == {"a": {"b": {"c": "1e-3"}}}
    with pytest.raises(ConfigError):
        parse_override("novalue")


@pytest.mark.parametrize("preset", sorted(p.name for p in __import__("llm4cdsr.config", fromlist=["PRESET_DIR"]).PRESET_DIR.glob("*.yaml")))
def test_presets_load_and_name_their_domains(preset):
    from llm4cdsr.data.amazon import domain_name

    cfg = load_config([preset])
    data = cfg["data"]
    assert len(data["domains"]) == 2
    assert cfg["embed"]["local_dim"] == cfg["model"]["hidden"]
    if data["reviews"]:  # Amazon dumps: the map must rename exactly the files' categories
        assert sorted(domain_name(r) for r in data["reviews"]) == sorted(data["domain_map"])
        assert sorted(data["domain_map"].values()) == sorted(data["domains"])
