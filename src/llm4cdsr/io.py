"""Small file helpers shared by every stage: atomic writes, JSON, config hashes.

Every stage writes its artifacts through these so that a crash or Ctrl-C never leaves a
half-written artifact that a later stage would accept.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml
from numpy.lib import format as npy_format


class ArtifactError(RuntimeError):
    """An artifact a stage needs is missing or was made from other inputs."""


class DamagedArtifactError(ArtifactError, ValueError):
    """A file that exists but does not read back (truncated by a kill or a full disk, corrupt); the
    message names it and what rebuilds it. A ValueError too, so that readers which skip an
    unreadable file (compare, the report's other runs) still do."""


def rebuild_hint(path: str | Path) -> str:
    """What rebuilds the artifact at `path`, from where it lies in a workspace."""
    path = Path(path)
    parents = [p.name for p in path.parents][:3]
    if parents[:1] == ["dataset"]:
        return "prepare it again: `llm4cdsr prepare --force` (or `llm4cdsr run`, which rebuilds a damaged dataset)"
    if parents[:1] == ["embeddings"]:
        return "rebuild it: `llm4cdsr embed --force` with the config that made it"
    if parents[:1] and parents[0].startswith("profiles"):
        return "rebuild it: `llm4cdsr profile --force` with the config that made it"
    if parents[1:2] == ["candidates"]:
        return f"remove {path.parent} (the candidates are drawn again, with the same seed)"
    if parents[:1] == ["report"]:
        return f"write it again: `llm4cdsr report {path.parent.parent}`"
    if parents[1:2] == ["runs"]:
        return (f"the run {path.parent} is damaged: train it again under a new --run-name, or remove the folder and "
                "train it again")
    return "remove it and run the command that made it again"


def damaged(path: str | Path, error: BaseException | str) -> DamagedArtifactError:
    """The error for a file that did not read back, naming it and what rebuilds it."""
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    return DamagedArtifactError(f"{path}: damaged or truncated ({reason}); {rebuild_hint(path)}")


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable object that does not depend on dict order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def temp_prefix(path: str | Path) -> str:
    """The prefix of a temporary file written beside `path`: `.<name>.<pid>.` (then mkstemp's random
    part and `.tmp`), so that a later writer can tell a killed writer's file from a live one's."""
    return f".{Path(path).name}.{os.getpid()}."


# The process's umask, read once (os.umask can only be read by setting it), and the mode an
# ordinary open() gives a new file under it: every artifact gets it, however it was written.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def temp_file(path: str | Path) -> tuple[int, str]:
    """(fd, name) of a new temporary file beside `path` (temp_prefix), with the mode an ordinary
    open() would give (0666 less the umask): mkstemp makes it 0600, and the artifact renamed from it
    would keep that mode, unlike its neighbours."""
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=temp_prefix(path), suffix=".tmp")
    os.chmod(tmp, FILE_MODE)
    return fd, tmp


def remove_stale_temp_files(folder: str | Path, locked: bool = False) -> list[Path]:
    """Remove the temporary files (`.*.tmp`) that killed writers left in `folder`: those whose pid
    (temp_prefix) is gone; with `locked` (the caller holds the folder's lock, so no other process
    writes in it), also those without a pid (torch.save's and older versions'). Returns them."""
    folder = Path(folder)
    removed = []
    try:
        names = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for path in names:
        parts = path.name[1:-len(".tmp")].split(".")
        pid = parts[-2] if len(parts) >= 3 and parts[-2].isdigit() else None
        if (pid is not None and pid_alive(int(pid))) or (pid is None and not locked) or not path.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not e.filename:  # a full disk that names no file: name it
            raise write_failure(path, e) from None
        raise


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except ValueError as e:  # invalid JSON or UTF-8: a truncated or corrupt file
            raise damaged(path, e) from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file this package wrote (a run's config.yaml); a corrupt one is a DamagedArtifactError."""
    with open(path, encoding="utf-8") as f:
        try:
            return yaml.safe_load(f)
        except (yaml.YAMLError, ValueError) as e:
            raise damaged(path, e) from None


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save a NumPy array atomically; arrays never hold Python objects (no pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not e.filename:  # numpy says only "4698 requested and 1008 written"
            raise write_failure(path, e) from None
        raise


def file_damage(path: str | Path) -> str | None:
    """Why the artifact file at `path` would not read back, or None: a cheap check of the layout each
    format declares (JSON parses; an .npy, .safetensors or .parquet file is as long as its header
    says), which is what a kill or a full disk during a write breaks. Other files: None."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.suffix == ".json":
            with open(path, encoding="utf-8") as f:
                json.load(f)
        elif path.suffix == ".npy":
            with open(path, "rb") as f:
                version = npy_format.read_magic(f)
                read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
                shape, _, dtype = read_header(f)
                if dtype.hasobject:
                    return "holds Python objects"
                expected = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if size != expected:
                return f"{size:,} bytes where its header declares {expected:,}"
        elif path.suffix == ".safetensors":
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                if n <= 0 or n > size - 8:
                    return "no complete safetensors header"
                header = json.loads(f.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if size != 8 + n + end:
                return f"{size:,} bytes where its header declares {8 + n + end:,}"
        elif path.suffix == ".parquet":
            with open(path, "rb") as f:
                head = f.read(4)
                f.seek(max(size - 8, 0))
                tail = f.read(8)
            if size < 12 or head != b"PAR1" or tail[4:] != b"PAR1" or int.from_bytes(tail[:4], "little") > size - 12:
                return "no complete Parquet footer"
    except (ValueError, EOFError, KeyError, TypeError, IndexError) as e:
        return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return None


def check_folder(folder: str | Path) -> None:
    """Raise DamagedArtifactError naming the first file of `folder` (top level) that would not read back."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and (problem := file_damage(path)):
            raise damaged(path, problem)


def load_npy(path: str | Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, EOFError) as e:  # a truncated array, a bad header, a pickled one
        raise damaged(path, e) from None


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename.

    On any error (or KeyboardInterrupt) the temporary folder is removed and `final`, if it
    existed, is left exactly as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    # The pid in the name tells a later writer whether the folder's maker is still alive.
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-{os.getpid()}-"))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's 0700 would otherwise become the folder's mode
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_failure(path: str | Path, error: BaseException) -> OSError:
    """The OSError behind a failed write, for writers that hide it (torch.save says only
    `unexpected pos 704 vs 598`, safetensors `Error while serializing: I/O error ...`)."""
    text = str(error)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES):
        if os.strerror(code) in text or f"os error {code})" in text:
            return OSError(code, os.strerror(code), str(path))
    # Ask the file system itself: a plain write of 1 MiB beside the file fails the same way.
    try:
        fd, probe = tempfile.mkstemp(dir=Path(path).parent, prefix=".write-probe-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(bytes(1 << 20))
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.unlink(probe)
    except OSError as e:
        return OSError(e.errno, e.strerror, str(path))
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    if free is not None and free < 64 * 2**20:
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free:,} bytes free)", str(path))
    return OSError(errno.EIO, f"the write failed ({text[:200]})", str(path))


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_stale_partials(final: str | Path) -> list[Path]:
    """Remove what a killed writer left beside `final` (`.<name>.partial-<pid>-*` and `.<name>.old-<pid>`
    folders whose process is gone, and pid-less partial folders of versions before pids were
    recorded); returns them. A live process's folders are left alone."""
    final = Path(final)
    removed = []
    for path in sorted(final.parent.glob(f".{final.name}.partial-*")) + sorted(final.parent.glob(f".{final.name}.old-*")):
        tail = path.name.split(".partial-", 1)[-1] if ".partial-" in path.name else path.name.split(".old-", 1)[-1]
        pid = tail.split("-", 1)[0]
        if pid.isdigit() and pid_alive(int(pid)) and ("-" in tail or ".old-" in path.name):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
