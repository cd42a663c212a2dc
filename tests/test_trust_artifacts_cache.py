"""A cache.sqlite that is corrupt, unreadable or on a full disk: one line naming it and what to do
(it was a CacheError traceback)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from openai_stub import OpenAIStub, stub_overrides

from llm4cdsr.cli import main
from llm4cdsr.llm import cache as cache_module
from llm4cdsr.llm.cache import Cache, CacheError
from llm4cdsr.workspace import Workspace


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dim=16) as s:
        yield s


@pytest.fixture
def ws(tmp_path, synth_ds) -> Path:
    synth_ds.save(Workspace(tmp_path / "ws").dataset_dir)
    return tmp_path / "ws"


def _embed(ws: Path, stub) -> int:
    return main(["embed", "-w", str(ws), *stub_overrides(stub, chat=False), "embed.global_dim=8"])


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("llm4cdsr embed: error: cache "), err[-2000:]
    return last


def test_a_file_that_is_not_a_database(ws, stub, capsys):
    (ws / "cache.sqlite").write_bytes(np.random.default_rng(0).bytes(65536))
    assert _embed(ws, stub) == 2
    line = _error(capsys)
    assert f"{ws / 'cache.sqlite'}: opening it failed" in line and "move the file aside" in line, line


def test_an_unreadable_cache(ws, stub, capsys):
    (ws / "cache.sqlite").mkdir()  # what open() cannot read, also as root
    assert _embed(ws, stub) == 2
    line = _error(capsys)
    assert f"{ws / 'cache.sqlite'}: opening it failed" in line and "readable and writable" in line, line


def test_a_full_disk(ws, stub, capsys, monkeypatch):
    opened = Cache.__init__

    def small_disk(self, path, timeout_s=60.0):
        opened(self, path, timeout_s)
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        self._db.execute(f"PRAGMA max_page_count={pages + 2}")  # SQLite then answers SQLITE_FULL

    monkeypatch.setattr(cache_module.Cache, "__init__", small_disk)
    assert _embed(ws, stub) == 2
    line = _error(capsys)
    assert "writing to it failed (database or disk is full); free space on its disk" in line, line


def test_a_damaged_page_is_one_error_naming_the_cache(tmp_path):
    path = tmp_path / "cache.sqlite"
    with Cache(path) as cache:
        keys = [bytes([i % 256, i // 256]) * 16 for i in range(3000)]
        cache.put_vectors(keys, np.ones((3000, 64), dtype=np.float32))
        cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[8192:len(data) - 8192] = bytes(len(data) - 16384)  # every page but the first two zeroed
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"cache .*cache.sqlite: (opening|reading) it failed .*move the file aside"):
        with Cache(path) as cache:
            cache.get_vectors(keys)
