"""The sha256 of a file, and the ``<file>.sha256`` sidecar that remembers it.

The sidecar holds one line, ``<sha256> <size> <mtime_ns>``: it stands for the file only while the
file's size and modification time are the ones written, so an edited file is hashed again. The
engine's hash cache and the worker's model cache both read and write it, so a model hashed by one is
never hashed again by the other. A leaf: imports nothing of sdfleet.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

BLOCK = 8 << 20
SIDECAR_SUFFIX = ".sha256"


def hash_prefix(path: Path, length: int | None = None, *, offset: int = 0) -> Any:
    """A sha256 object fed with ``length`` bytes of ``path`` from ``offset`` (to the end if None)."""
    digest = hashlib.sha256()
    remaining = length
    with path.open("rb") as fh:
        fh.seek(offset)
        while remaining is None or remaining > 0:
            block = fh.read(BLOCK if remaining is None else min(BLOCK, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest


def sha256_file(path: Path, offset: int = 0) -> str:
    """The hex sha256 of ``path`` (of what follows the first ``offset`` bytes)."""
    digest: str = hash_prefix(path, None, offset=offset).hexdigest()
    return digest


def sidecar_path(path: Path) -> Path:
    """Where the sidecar of ``path`` lives: ``<file>.sha256`` beside it."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(path: Path, size: int, mtime_ns: int) -> str | None:
    """The sha256 (lower case) in ``path``'s sidecar, if there is one and it was written for this size
    and mtime."""
    try:
        fields = sidecar_path(path).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) == 3 and fields[1] == str(size) and fields[2] == str(mtime_ns) and len(fields[0]) == 64:
        return fields[0].lower()
    return None


def write_sidecar(path: Path, digest: str, size: int, mtime_ns: int) -> None:
    """Write ``path``'s sidecar (raises :class:`OSError` when it cannot be written)."""
    sidecar_path(path).write_text(f"{digest} {size} {mtime_ns}\n", encoding="ascii")
