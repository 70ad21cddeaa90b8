"""Space kept beside the database in a file, given back when a full disk would otherwise keep a
job's final row (status, counts) from being written."""

from __future__ import annotations

from pathlib import Path

__all__ = ["RESERVE_BYTES", "ensure", "release"]

RESERVE_BYTES = 256 * 1024


def _path(db: Path) -> Path:
    return db.with_name(db.name + ".reserve")


def ensure(db: Path) -> None:
    """Keep `RESERVE_BYTES` of real disk blocks beside the database (once per job start)."""
    reserve = _path(db)
    if reserve.exists():
        return
    try:
        with open(reserve, "wb") as f:
            f.write(bytes(RESERVE_BYTES))
    except OSError:
        reserve.unlink(missing_ok=True)  # no room even for that: nothing to keep


def release(db: Path) -> bool:
    """Give the space back; False when there was none to give."""
    try:
        _path(db).unlink()
    except OSError:
        return False
    return True
