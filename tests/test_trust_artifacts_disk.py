"""A full disk is one line naming the file: numpy's "4698 requested and 1008 written" and the ONNX
exporter's bare "No space left on device" named none."""
from __future__ import annotations

import errno
import subprocess
import sys
import textwrap

import pytest

from llm4cdsr.llm import embedders as embedders_module

SAVE_LIMITED = textwrap.dedent("""
    import resource, signal, sys, numpy as np
    from llm4cdsr.io import save_npy, write_json
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    for name, save in (("items.npy", lambda p: save_npy(p, np.ones((100, 100), dtype=np.float32))),
                       ("meta.json", lambda p: write_json(p, {"x": "y" * 50_000}))):
        try:
            save(sys.argv[1] + "/" + name)
        except OSError as e:
            print(name, e.errno, e.filename)
""")


def test_a_failed_array_or_json_write_names_the_file(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SAVE_LIMITED, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["items.npy", str(errno.EFBIG), str(tmp_path / "items.npy"),
                                   "meta.json", str(errno.EFBIG), str(tmp_path / "meta.json")], proc.stdout
    assert not list(tmp_path.iterdir())  # no temporary file left


def test_a_full_disk_during_the_onnx_export_names_the_folder(tmp_path, monkeypatch):
    def no_space(path, out_dir, probe=None):
        raise OSError(errno.ENOSPC, "No space left on device")  # what onnx's writer raises: no file

    monkeypatch.setattr(embedders_module, "export_onnx_int8", no_space)
    embedder = embedders_module.OnnxEmbedder(export_root=tmp_path / "onnx")
    with pytest.raises(OSError) as err:
        embedder.load()
    assert err.value.errno == errno.ENOSPC and str(tmp_path / "onnx") in err.value.filename
