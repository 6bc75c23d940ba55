"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Used for every file the workbook writes that a kill could leave half-written: dataset cache entries, checkpoints
and shipped artefacts (``runtime.atomic_torch_save``), converted LPIPS weights, records and score files.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Callable

HOST = socket.gethostname().replace(".", "_").replace("-", "_")  # in temp names: whose temp file it is


def atomic_write(path: Path, write: Callable) -> None:
    """Call ``write(file_object)`` on a temp file in ``path``'s folder, fsync, then rename it onto ``path``.

    The temp file's name carries the writer's host and pid; temp files for ``path`` left by writers on this host
    that are gone (a SIGKILLed build) are removed first, so a killed write leaves nothing behind once it is redone.
    Another host's temp files (a shared cache) are left alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphan_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{HOST}-{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary files to share
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_orphan_temps(path: Path) -> None:
    """Delete ``atomic_write`` temp files of ``path`` written on this host by processes that no longer run."""
    for tmp in path.parent.glob(f".{path.name}.{HOST}-*.tmp"):
        pid = tmp.name[len(path.name) + len(HOST) + 3:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
