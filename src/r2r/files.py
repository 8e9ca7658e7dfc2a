"""Writing files safely: outputs appear whole or not at all, and never over what r2r did
not write. Knows no file format.

A folder output carries a marker file (`MARKER`, holding its kind: "expert", "system",
"beir", ...). An existing folder is replaced only when it is empty or holds the marker of
the same kind; the working directory, its parents and any other folder are refused before
anything is written. The swap itself is one atomic exchange on Linux (readers see the old
folder or the new one, never none) under a lock on the parent folder (concurrent writers
take turns).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: writers are not serialised
    fcntl = None

MARKER = ".r2r-output"
_RENAME_EXCHANGE = 2  # linux/fs.h


class OutputError(ValueError):
    """An output path r2r will not write to; names the path and why."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


def check_target(target: str | Path, kind: str | None = None) -> None:
    """Refuse an output path before anything is written: the working directory or one of
    its parents; a folder where a file is to go; a file where a folder is to go; a
    non-empty folder that is not an r2r output of this `kind` (None: a file output)."""
    target = Path(target)
    where = target.resolve()
    if not target.name or Path.cwd().resolve().is_relative_to(where):
        raise OutputError(target, "is the working directory or one of its parents; name a new path")
    if kind is None:
        if target.is_dir():
            raise OutputError(target, "is a folder; name the output file inside it")
        return
    if target.exists() and not target.is_dir():
        raise OutputError(target, f"is a file; the {kind} output is a folder")
    if target.is_dir() and any(target.iterdir()) and marked(target) != kind:
        found = marked(target)
        what = f"an r2r {found} output" if found else "files r2r did not write"
        raise OutputError(
            target, f"holds {what}; r2r replaces only an earlier {kind} output (name a new folder)"
        )


def marked(folder: Path) -> str | None:
    """The kind of r2r output `folder` is, from its marker; None when it has none."""
    try:
        return (folder / MARKER).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


@contextmanager
def atomic_path(target: str | Path, *, kind: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; move it into place only on success.

    `kind` None: a file output. Otherwise a folder output of that kind: the folder is
    marked with it and may later replace only an output of the same kind (`check_target`,
    checked before the caller writes anything and again at the swap).
    """
    target = Path(target)
    check_target(target, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if kind is not None:
            if not tmp.is_dir():
                raise RuntimeError(f"a {kind} output must be a folder; {tmp} is not one")
            (tmp / MARKER).write_text(kind + "\n", encoding="utf-8")
        with _locked(target.parent):
            check_target(target, kind)  # another writer may have put something there
            if kind is not None and target.is_dir():
                _exchange(tmp, target)  # the old folder is now at tmp, removed below
            else:
                os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` (flock on the folder itself: no lock file left)."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _exchange(a: Path, b: Path) -> None:
    """Swap two existing paths in one step (Linux renameat2); elsewhere, or where the file
    system cannot, move `b` aside to `a`'s parent and `a` into place (a moment without `b`)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd = -100
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        if ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(b))
    aside = a.with_name(a.name + ".old")
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
