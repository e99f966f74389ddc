"""What a published adapter states about itself, read without running its code.

Its `model.py` holds a config dataclass (`whisper_dim`, `d_model`, `boa_token_id`, `audio_token_id`, ...). The file
is parsed, never imported: only literal defaults of class-level annotated fields are taken. A `config.json` at the
adapter's root (if the publisher ships one) overrides them.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from app.checkpoint.errors import CheckpointError

MODEL_SOURCE = "model.py"
CONFIG_JSON = "config.json"


def read_adapter_meta(adapter: Path) -> dict[str, Any]:
    """Literal config values the adapter states (empty when it states none)."""
    meta: dict[str, Any] = {}
    source = adapter / MODEL_SOURCE
    if source.is_file():
        try:
            tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        except SyntaxError as exc:
            raise CheckpointError(f"{source}: cannot be parsed ({exc.msg}, line {exc.lineno})") from None
        meta.update(_class_literals(tree))
    config = adapter / CONFIG_JSON
    if config.is_file():
        try:
            data = json.loads(config.read_text())
        except ValueError as exc:
            raise CheckpointError(f"{config}: {exc}") from None
        if isinstance(data, dict):
            meta.update({k: v for k, v in data.items() if isinstance(v, (int, float, str, bool))})
    return meta


def _class_literals(tree: ast.Module) -> dict[str, Any]:
    """`name: type = literal` fields of every top-level class whose name mentions Config (first one wins)."""
    found: dict[str, Any] = {}
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and "config" in node.name.lower()):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                try:
                    found.setdefault(stmt.target.id, ast.literal_eval(stmt.value))
                except ValueError:
                    continue  # a computed default: not something to read without running code
    return found
