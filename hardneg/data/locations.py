"""Where datasets live by default; a module of its own so that the downloader starts without
importing torch or Lightning (an offline ``download`` should fail in a second, not after imports)."""
from __future__ import annotations

import os
from pathlib import Path


def default_root(name: str) -> Path:
    """``$HARDNEG_DATA/<name>``, or ``~/data/<name>`` when HARDNEG_DATA is unset."""
    base = os.environ.get("HARDNEG_DATA")
    return (Path(base).expanduser() if base else Path.home() / "data") / name
