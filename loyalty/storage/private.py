"""Files that hold what only the operator may read: the SQLite database (members, balances), card
sheets and QR images (card tokens are credentials). They are created 0600, their folders 0700,
whatever the process's umask; an existing folder (the working directory, say) is left as it is."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by the owner only; return it."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=DIR_MODE)
        os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask
    return path


def touch_private(path: Path) -> Path:
    """Create ``path`` empty and 0600 unless it exists (SQLite then opens the empty file as a new
    database, and its -wal and -shm files take the database file's mode)."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    os.close(fd)
    os.chmod(path, FILE_MODE)
    return path


def write_private(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` with mode 0600 (a file there before is replaced, mode included):
    through a fresh temporary file in the same folder (never a name planted there), then renamed."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600, O_EXCL
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
