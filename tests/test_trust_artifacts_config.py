"""Config YAML: duplicate keys and aliases (a "billion laughs" under data.domain_map hung the loader)
are refused in one line naming the file and the place."""
from __future__ import annotations

import subprocess
import sys

import pytest

from llm4cdsr.cli import main
from llm4cdsr.config import ConfigError, load_config

BOMB = "data:\n  domain_map:\n    a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"    {chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def test_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  epochs: 3\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML: duplicate key 'lr' \(line 4, column 3\)"):
        load_config([path])


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)  # 10**9 strings once expanded
    # In a process of its own, bounded: the expansion it must not start would hang this one.
    proc = subprocess.run([sys.executable, "-m", "llm4cdsr", "prepare", "-c", str(path), "--out", str(tmp_path / "ws")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "bomb.yaml: not valid YAML: alias *a is not accepted" in err[0], err


def test_a_bad_yaml_override_is_one_line(tmp_path, capsys):
    assert main(["prepare", "--out", str(tmp_path / "ws"), "data.domain_map={a: [b"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llm4cdsr prepare: error: command line: data.domain_map: not valid YAML"), err
