import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np

from llm4cdsr.llm.cache import Cache, make_key, make_keys, namespace


def test_vectors_round_trip_and_namespaces_differ(tmp_path):
    ns_a = namespace(kind="embedding", backend="x", model="a", params={})
    ns_b = namespace(kind="embedding", backend="x", model="b", params={})
    assert make_key(ns_a, "t") != make_key(ns_b, "t")
    assert make_keys(ns_a, ["t", "u"]) == [make_key(ns_a, "t"), make_key(ns_a, "u")]
    vecs = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    keys = make_keys(ns_a, ["a", "b", "c"])
    with Cache(tmp_path / "c.sqlite") as cache:
        cache.put_vectors(keys, vecs)
        got = cache.get_vectors(keys + [make_key(ns_b, "a")])
    assert len(got) == 3
    np.testing.assert_array_equal(np.stack([got[k] for k in keys]), vecs)


def test_corrupt_and_truncated_entries_are_detected(tmp_path):
    ns = namespace(kind="t")
    keys = make_keys(ns, ["a", "b", "c"])
    path = tmp_path / "c.sqlite"
    with Cache(path) as cache:
        cache.put_vectors(keys, np.ones((3, 4), dtype=np.float32))
        cache.put_texts([(keys[0], "hello"), (keys[1], "world")])
    db = sqlite3.connect(path)
    db.execute("UPDATE embeddings SET vec = substr(vec, 1, 8) WHERE key = ?", (keys[0],))  # partial write
    db.execute("UPDATE embeddings SET vec = zeroblob(16) WHERE key = ?", (keys[1],))  # flipped bytes
    db.execute("UPDATE chats SET text = 'hellO' WHERE key = ?", (keys[0],))
    db.commit()
    db.close()
    with Cache(path) as cache:
        assert set(cache.get_vectors(keys)) == {keys[2]}
        assert set(cache.get_texts(keys)) == {keys[1]}
        assert cache.corrupt_entries == 3


def test_concurrent_writers_threads_and_processes(tmp_path):
    path = tmp_path / "c.sqlite"
    ns = namespace(kind="t")
    script = (
        "import sys, numpy as np\n"
        "from llm4cdsr.llm.cache import Cache, make_keys, namespace\n"
        "c = Cache(sys.argv[1]); ns = namespace(kind='t')\n"
        "for i in range(20):\n"
        "    texts = [f'{sys.argv[2]}-{i}-{j}' for j in range(50)]\n"
        "    c.put_vectors(make_keys(ns, texts), np.full((50, 8), i, dtype=np.float32))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), f"p{n}"]) for n in range(2)]

    def write(tag):
        with Cache(path) as c:
            for i in range(20):
                texts = [f"{tag}-{i}-{j}" for j in range(50)]
                c.put_texts([(k, t) for k, t in zip(make_keys(ns, texts), texts)])

    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.wait(timeout=60) == 0 for p in procs)
    with Cache(path) as c:
        assert c.counts() == {"embeddings": 2 * 20 * 50, "chats": 3 * 20 * 50}


def test_batched_reads_and_writes_are_fast(tmp_path):
    ns = namespace(kind="t")
    texts = [f"text {i}" for i in range(20_000)]
    vecs = np.random.default_rng(0).standard_normal((len(texts), 64)).astype(np.float32)
    with Cache(tmp_path / "c.sqlite") as cache:
        t0 = time.perf_counter()
        keys = make_keys(ns, texts)
        cache.put_vectors(keys, vecs)
        got = cache.get_vectors(make_keys(ns, texts))
        elapsed = time.perf_counter() - t0
    assert len(got) == len(texts)
    assert elapsed < 5.0  # ~0.3 s here; one transaction per row would take minutes


class _FakeEmbedder:
    """An embedder of fixed width that makes no model call: what CachedEmbedder reads of one."""

    backend, model, params, batch_size, concurrency, dim = "fake", "fake", {}, 2, 1, 3

    def embed_batch(self, texts):
        return np.ones((len(texts), 3), dtype=np.float32)


def test_embedding_progress_counts_characters(tmp_path, monkeypatch):
    # Texts go longest first: a bar counting texts reads the first, longest batches as the rate of
    # all and showed an ETA hours too long; counted in characters, the rate holds from the start.
    import llm4cdsr.llm.embedders as embedders

    bars = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.done, self.unit = total, 0, kwargs.get("unit")
            bars.append(self)

        def update(self, n):
            self.done += n

        def close(self):
            pass

    monkeypatch.setattr(embedders, "tqdm", Bar)
    texts = ["a" * 500, "bb", "ccc", "a" * 500, "dddd"]
    with Cache(tmp_path / "cache.sqlite") as cache:
        out = embedders.CachedEmbedder(_FakeEmbedder(), cache, progress=True).embed(texts)
    assert out.shape == (5, 3)
    (bar,) = bars
    assert bar.unit == "char" and bar.total == bar.done == 500 + 2 + 3 + 4  # distinct texts, in characters
