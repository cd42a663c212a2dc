"""One writer per folder: an exclusive lock held for the whole write of a run or stage folder.

    with folder_lock(run_dir):      # a second writer fails at once, naming this process
        ...write run_dir...

The lock is `filelock`'s (flock on Linux and macOS) on a file beside the folder,
`<parent>/.<name>.lock`, so that a folder replaced or removed as a whole keeps its lock. The
kernel drops the lock when the holding process dies, so a lock left by a killed process (a dead
PID) is simply taken over. Beside the lock, `<parent>/.<name>.lock.json` says who holds it
(pid, command, start time), for the refusal message of the second writer.

Locks are re-entrant within a process (`llm4cdsr run` holds a run folder's lock and calls the
training that takes it again); other processes are refused.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from llm4cdsr.io import pid_alive, remove_stale_temp_files, write_json

# How long a refused writer waits for the holder's note (written right after the lock is won).
_NOTE_WAIT_S = 1.0

log = logging.getLogger(__name__)

_held: set[Path] = set()
_held_guard = threading.Lock()


class LockError(RuntimeError):
    """Another process is writing the folder; the message names it (pid and command)."""


def lock_paths(folder: str | Path) -> tuple[Path, Path]:
    """(lock file, holder note) of a folder."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.lock", folder.parent / f".{folder.name}.lock.json"


def holder(folder: str | Path) -> dict | None:
    """The holder note of a folder's lock, if there is one (it may be stale: check the pid)."""
    _, note = lock_paths(folder)
    try:
        data = json.loads(note.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe_holder(folder: Path) -> str:
    deadline = time.monotonic() + _NOTE_WAIT_S
    while True:
        note = holder(folder)
        if note and isinstance(note.get("pid"), int) and pid_alive(note["pid"]):
            return f"pid {note['pid']}: {note.get('command', '?')} (since {note.get('started', '?')})"
        if time.monotonic() >= deadline:
            return "a process that left no note"
        time.sleep(0.05)


@contextlib.contextmanager
def folder_lock(folder: str | Path, hint: str = "") -> Iterator[None]:
    """Hold the exclusive lock of `folder` for the block; raise LockError at once if another
    process holds it. `hint` ends the refusal message (what else the user may do)."""
    lock_file, note = lock_paths(folder)
    with _held_guard:
        reentered = lock_file in _held
    if reentered:  # this process holds it already (the outer block releases it)
        yield
        return

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise LockError(
            f"{folder} is being written by another process ({_describe_holder(Path(folder))}); "
            f"wait for it to finish or stop it{hint}"
        ) from None
    with _held_guard:
        _held.add(lock_file)
    try:
        write_json(note, {
            "pid": os.getpid(),
            "command": shlex.join(sys.argv) if sys.argv and sys.argv[0] else "python",
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        # What killed writers left: in the folder, every temporary file (this lock keeps other writers
        # out); beside it, those of dead processes (other folders' writers write there too).
        for path in remove_stale_temp_files(folder, locked=True) + remove_stale_temp_files(lock_file.parent):
            log.info("removed %s, left by a killed writer", path)
        yield
    finally:
        with _held_guard:
            _held.discard(lock_file)
        with contextlib.suppress(OSError):
            mine = holder(folder)
            if mine is not None and mine.get("pid") == os.getpid():
                note.unlink()
        lock.release()
