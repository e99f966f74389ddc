"""`inspect-adapter`: what an adapter directory holds and how each part of it would be used, without loading the
backbone (its config builds the layer names on the meta device; only the tokenizer is read)."""

from __future__ import annotations

from pathlib import Path

from app.checkpoint.adapter_code import PROJECTOR_CLASS
from app.checkpoint.adapter_files import scan_adapter
from app.checkpoint.adapter_plan import AdapterPlan, plan_adapter
from app.checkpoint.errors import CheckpointError
from app.checkpoint.prompt_check import check_prompt
from app.checkpoint.reading import encoder_frames, load_tokenizer
from app.model.asr_config import AsrConfig


def inspect_adapter(adapter: Path, backbone: Path | None = None, encoder: Path | None = None,
                    trust_code: bool = False) -> tuple[list[str], bool]:
    """Report lines, and whether the adapter would load (every problem is listed under "missing")."""
    problems: list[str] = []
    lines = [f"adapter: {adapter}"]
    files = scan_adapter(adapter)
    plan: AdapterPlan | None = None
    try:
        frames = encoder_frames(encoder) if encoder else 1500
        plan = plan_adapter(adapter, backbone, trust_code, frames, strict=False)
    except CheckpointError as exc:
        problems.append(str(exc))
    if plan is not None:
        problems += plan.problems
        lines.append(f"layout: {plan.layout}; projector: {plan.projector.kind}")
    roles = _roles(plan) if plan is not None else {}
    keys = {(wf.path, info.name): k for k, (wf, info) in {**files.lora, **files.projector, **files.unused}.items()}
    for f in files.files:
        lines.append(f"file {f.path.relative_to(adapter)}:")
        for name, info in f.tensors.items():
            key = keys[(f.path, name)]
            role = roles.get(key) or _fallback_role(key, files)
            lines.append(f"  {name} {list(info.shape)} {info.dtype} -> {role}")
    if not files.files:
        lines.append("no weight files found")
    if plan is not None:
        lines += _contract(plan.config)
        if backbone is None:
            problems.append("LoRA and prompt tokens not checked against a backbone: pass --backbone")
        else:
            try:
                prompt = check_prompt(load_tokenizer(backbone), plan.config, str(adapter))
                lines.append(f"prompt token ids ({len(prompt.ids)}): {_ids(prompt.ids.tolist())}")
            except (CheckpointError, OSError) as exc:
                problems.append(str(exc))
    if plan is not None and plan.projector.kind == "described":
        lines += [f"projector assumption: {a}" for a in plan.projector.described.assumptions]  # type: ignore[union-attr]
    lines.append("missing: " + ("nothing" if not problems else ""))
    lines += [f"  - {p}" for p in problems]
    return lines, not [p for p in problems if "pass --backbone" not in p]


def _roles(plan: AdapterPlan) -> dict[str, str]:
    roles: dict[str, str] = {}
    choice = plan.projector
    if choice.kind == "unresolved":
        pass
    elif choice.kind == "described":
        source = choice.described.source  # type: ignore[union-attr]
        roles.update({saved: f"projector {own} ({source})" for own, saved in choice.described.keys.items()})  # type: ignore[union-attr]
    elif choice.kind == "code":
        own = list(plan.built_projector.state_dict()) if plan.built_projector is not None else []
        for name in plan.files.projector:
            match = max((k for k in own if name.endswith(k.removeprefix("module."))), key=len, default=None)
            roles[name] = f"projector via {PROJECTOR_CLASS}" + (f" {match.removeprefix('module.')}" if match else "")
    else:
        roles.update({name: "projector (project layout)" for name in plan.files.projector})
    if plan.lora is not None:
        suffix = f", prefix {plan.lora.rewrite[0] or '(none)'} -> {plan.lora.rewrite[1]}" if plan.lora.rewrite else ""
        roles.update({name: f"LoRA {part} of {module} (rank {plan.lora.rank}{suffix})"
                      for name, (module, part) in plan.lora.targets.items()})
    roles.update({name: "unused" for name in plan.files.unused})
    return roles


def _fallback_role(key: str, files) -> str:
    if key in files.lora:
        return "LoRA (not matched to backbone layers)"
    if key in files.projector:
        return "projector (layout unknown)"
    return "unused"


def _contract(config: AsrConfig) -> list[str]:
    template = config.prompt_template.replace("{audio}", f"{config.audio_start_token or ''}"
                                              f"{config.audio_token} x {config.audio_slots}"
                                              f"{config.audio_end_token or ''}")
    stated = ", ".join(f"{t} = {i}" for t, i in (config.stated_token_ids or {}).items()) or "none"
    return [
        f"prompt: {template!r}",
        f"language hint: {config.language_hint!r}; context hint: {config.context_hint!r}",
        f"audio tokens: start {config.audio_start_token!r}, slot {config.audio_token!r}, end "
        f"{config.audio_end_token!r}; ids stated by the adapter: {stated}",
        f"decoding: canvas {config.canvas_length}, {config.default_steps} steps, entropy bound "
        f"{config.entropy_bound}, temperature {config.t_min}..{config.t_max}, stability {config.stability_threshold}, "
        f"confidence {config.confidence_threshold}, soft-capping "
        f"{config.final_logit_softcapping if config.final_logit_softcapping is not None else 'the backbone config'}",
    ]


def _ids(ids: list[int]) -> str:
    """Runs of one id shown once with a count, so 188 audio slots take one entry."""
    runs: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j < len(ids) and ids[j] == ids[i]:
            j += 1
        runs.append(f"{ids[i]}" + (f" x {j - i}" if j - i > 1 else ""))
        i = j
    return ", ".join(runs)
