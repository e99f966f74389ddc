"""`import-adapter`: a published adapter rewritten in the project's own layout, so that a deployment serves it
without running the adapter's code at every start.

The projector becomes a `projector.json` description with its tensors under the description's names (from the
adapter's own module when it is trusted: walked layer by layer and checked output for output); the LoRA is
copied under the backbone's module names when a backbone is given (else under its saved names, remapped at
load); the published decoding contract is written out in full as `asr_config.json`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from app.checkpoint.adapter_code import describe_module
from app.checkpoint.adapter_files import PEFT_CONFIG
from app.checkpoint.adapter_plan import plan_adapter
from app.checkpoint.asr_config_file import write_asr_config
from app.checkpoint.errors import CheckpointError
from app.checkpoint.layout import LORA_DIR, PROJECTOR_FILE, PROJECTOR_META_FILE
from app.checkpoint.lora import PEFT_SAVE_PREFIX
from app.checkpoint.projector_files import layout_to_json
from app.model.projector import DescribedProjector, ForeignProjector


def import_adapter(src: Path, out: Path, trust_code: bool = False, backbone: Path | None = None) -> list[str]:
    """Write `out` in the project's layout from the adapter at `src`; returns lines saying what was mapped."""
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out} exists and is not empty")
    plan = plan_adapter(src, backbone, trust_code)
    projector = plan.build_projector(trust_code)
    if isinstance(projector, ForeignProjector):
        layout, keys = describe_module(projector)
        state = projector.module.state_dict()
        tensors = {own: state[theirs].contiguous() for own, theirs in keys.items()}
        origin = {own: f"{src.name}'s AudioProjector {theirs}" for own, theirs in keys.items()}
    elif isinstance(projector, DescribedProjector):
        layout = projector.layout
        tensors = {k: v.contiguous() for k, v in projector.state_dict().items()}
        origin = {own: saved for own, saved in plan.projector.described.keys.items()}  # type: ignore[union-attr]
    else:
        raise CheckpointError(f"{src} is already in the project's layout; copy it as it is")
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / PROJECTOR_FILE))
    (out / PROJECTOR_META_FILE).write_text(json.dumps(layout_to_json(layout), indent=2) + "\n")
    lines = [f"projector: {saved} -> {own} {list(tensors[own].shape)}" for own, saved in origin.items()]
    lines += _write_lora(plan, out / LORA_DIR)
    write_asr_config(plan.config, out)
    lines.append(f"asr_config.json: prompt {plan.config.prompt_template!r}, canvas {plan.config.canvas_length}, "
                 f"{plan.config.default_steps} steps, audio slots {plan.config.audio_slots}")
    return lines


def _write_lora(plan, lora_dir: Path) -> list[str]:
    lora_dir.mkdir()
    shutil.copyfile(plan.peft_dir / PEFT_CONFIG, lora_dir / PEFT_CONFIG)
    saved = plan.lora_tensors()
    if plan.lora is None:
        names = {name: name for name in saved}
    else:
        names = {name: f"{PEFT_SAVE_PREFIX}{module}.lora_{part}.weight"
                 for name, (module, part) in plan.lora.targets.items()}
    save_file({names[n]: t.contiguous() for n, t in saved.items()}, str(lora_dir / "adapter_model.safetensors"))
    renamed = sum(1 for old, new in names.items() if old != new)
    where = "under the backbone's module names" if plan.lora is not None else "under their saved names"
    return [f"LoRA: {len(saved)} tensors {where} ({renamed} renamed) -> {LORA_DIR}/adapter_model.safetensors"]
