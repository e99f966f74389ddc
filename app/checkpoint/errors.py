"""The one error every model-file problem raises."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CheckpointError(Exception):
    """A model part is missing, incomplete or inconsistent; the message names the path and the file."""


def unreadable_file(part: Path) -> Path | None:
    """The first JSON or safetensors file of `part` (a file, or anywhere under a directory) that does not parse,
    else None."""
    from safetensors import safe_open

    files = [part] if part.is_file() else sorted(p for p in part.rglob("*") if p.is_file())
    for path in files:
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as weights:
                    for name in weights.keys():
                        weights.get_slice(name)
        except Exception:  # noqa: BLE001 - any failure to parse is what we are looking for
            return path
    return None


@contextmanager
def reading(part: Path) -> Iterator[None]:
    """Turn any failure while loading `part` into a `CheckpointError` naming the file at fault (libraries report
    a truncated or corrupt file without saying which one)."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as exc:
        culprit = unreadable_file(part) if part.exists() else None
        named = culprit or part
        raise CheckpointError(f"{named}: cannot be loaded ({type(exc).__name__}: {exc})") from exc
