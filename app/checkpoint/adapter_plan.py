"""What an adapter directory will be loaded as, decided before any weight is read: its layout (the project's own,
or one published elsewhere and used as downloaded), its decoding contract, its projector and its LoRA.

The project's layout has `projector.safetensors` and `lora/`. Anything else is read as a published
adapter: weights found by content (`app.checkpoint.adapter_files`), stated config values read from its
`model.py` (`app.checkpoint.adapter_meta`), and the Gemma-4 prompt and published decoding defaults below. An
`asr_config.json` in a published folder overrides those defaults key by key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from app.checkpoint.adapter_code import TRUST_HINT, build_code_projector, has_projector_code
from app.checkpoint.adapter_files import AdapterFiles, require_weights, scan_adapter
from app.checkpoint.adapter_meta import read_adapter_meta
from app.checkpoint.asr_config_file import read_asr_config
from app.checkpoint.errors import CheckpointError
from app.checkpoint.layout import ASR_CONFIG_FILE, PROJECTOR_META_FILE, is_project_layout
from app.checkpoint.lora import LoraPlan, backbone_module_names, plan_lora, read_peft_config
from app.checkpoint.projector_files import DescribedPlan, describe_from_json, infer_layout, is_own_projector
from app.checkpoint.reading import load_projector
from app.model.asr_config import AsrConfig
from app.model.projector import AnyProjector

# Gemma-4's chat turns and audio markers. The instruction text of the published adapter is not public: this
# default is a guess, overridable by an `asr_config.json` next to the weights (`prompt_template`).
GEMMA4_TEMPLATE = "<bos><|turn>user\n{audio}Transcribe the audio.{hint}<turn|>\n<|turn>model\n"
GEMMA4_AUDIO = {"audio_start_token": "<|audio>", "audio_token": "<|audio|>", "audio_end_token": "<audio|>"}
# The adapter's config names for the ids of those tokens, as its model.py states them.
STATED_IDS = {"boa_token_id": "audio_start_token", "audio_token_id": "audio_token", "eoa_token_id": "audio_end_token"}
PUBLISHED_CANVAS = 192  # the model card's canvas (the GitHub README says 256)
PUBLISHED_STEPS = 8  # "8 close to the best"; the published WER is at 16
PUBLISHED_SOFTCAP = 30.0
WHISPER_FRAMES = 1500  # whisper-small's encoder positions, when no encoder directory is given


@dataclass
class ProjectorChoice:
    """How the projector will be built: "project" (the project's own), "described" (a layout) or "code" (trusted)."""

    kind: str  # or "unresolved" (planned leniently, for a report: `error` says why)
    error: str | None = None
    described: DescribedPlan | None = None
    slots: int | None = None  # for the encoder's window, once known


@dataclass
class AdapterPlan:
    """An adapter directory's layout, contract, projector and LoRA, with every tensor's role."""

    root: Path
    layout: str  # "project" or "published"
    files: AdapterFiles
    meta: dict[str, Any]
    config: AsrConfig
    projector: ProjectorChoice
    peft_dir: Path
    lora: LoraPlan | None = None  # planned against the backbone's module names when a backbone is given
    problems: list[str] = field(default_factory=list)  # what a lenient plan could not settle
    _built: AnyProjector | None = field(default=None, repr=False)

    def projector_tensors(self) -> dict[str, torch.Tensor]:
        """The saved projector tensors, by name."""
        return _load(self.files.projector)

    def lora_tensors(self) -> dict[str, torch.Tensor]:
        """The saved LoRA tensors, by name."""
        return _load(self.files.lora)

    def build_projector(self, trust_code: bool) -> AnyProjector:
        """The projector with its weights, fp32 on the CPU (built once: the adapter's code runs once)."""
        if self._built is None:
            self._built = self._build(trust_code)
        return self._built

    @property
    def built_projector(self) -> AnyProjector | None:
        """The projector, when planning has built it already (the adapter's own code is run while planning)."""
        return self._built

    def _build(self, trust_code: bool) -> AnyProjector:
        if self.projector.kind == "unresolved":
            raise CheckpointError(self.projector.error)
        if self.projector.kind == "project":
            return load_projector(self.root, torch.device("cpu"), torch.float32)
        tensors = self.projector_tensors()
        if self.projector.kind == "described":
            return self.projector.described.build(tensors)  # type: ignore[union-attr]
        if not trust_code:
            raise CheckpointError(f"{self.root}: the projector needs the adapter's own code; pass {TRUST_HINT}")
        return build_code_projector(self.root, self.meta, tensors)


def plan_adapter(adapter: Path, backbone: Path | None = None, trust_code: bool = False,
                 encoder_frames: int = WHISPER_FRAMES, strict: bool = True) -> AdapterPlan:
    """The whole plan; `CheckpointError` says what was found and what to do when a part cannot be planned.

    Not `strict` (for a report), a projector or LoRA that cannot be planned is listed in `problems` instead.
    """
    files = scan_adapter(adapter)
    layout = "project" if is_project_layout(adapter) else "published"
    meta = {} if layout == "project" else read_adapter_meta(adapter)
    require_weights(files)
    peft_dir = files.peft_dirs[0]
    try:
        projector = choose_projector(adapter, files, meta, layout, trust_code)
    except CheckpointError as exc:
        if strict:
            raise
        projector = ProjectorChoice("unresolved", error=str(exc))
    config = read_asr_config(adapter) if layout == "project" else published_config(adapter, meta)
    plan = AdapterPlan(adapter, layout, files, meta, config, projector, peft_dir,
                       problems=[projector.error] if projector.error else [])
    if projector.kind == "code":
        try:
            projector.slots = plan.build_projector(trust_code).slots(encoder_frames)
        except CheckpointError as exc:
            if strict:
                raise
            plan.problems.append(str(exc))
    elif projector.kind == "described":
        projector.slots = projector.described.layout.slots(encoder_frames)  # type: ignore[union-attr]
    if layout == "published" and projector.slots is not None:
        plan.config = replace(plan.config, audio_slots=projector.slots)
    if backbone is not None:
        try:
            plan.lora = plan_lora({k: i.shape for k, (_, i) in files.lora.items()}, backbone_module_names(backbone),
                                  read_peft_config(peft_dir))
        except CheckpointError as exc:
            if strict:
                raise
            plan.problems.append(str(exc))
    return plan


def choose_projector(adapter: Path, files: AdapterFiles, meta: dict[str, Any], layout: str,
                     trust_code: bool) -> ProjectorChoice:
    """`projector.json`'s description, else the adapter's code when trusted, else the shapes when unambiguous."""
    shapes = {name: info.shape for name, (_, info) in files.projector.items()}
    spec = _json(adapter / PROJECTOR_META_FILE)
    if "conv" in spec or "linear" in spec:
        return ProjectorChoice("described", described=describe_from_json(spec, shapes))
    if layout == "project" and is_own_projector(set(shapes)):
        return ProjectorChoice("project")
    if trust_code and has_projector_code(adapter):
        return ProjectorChoice("code")
    inferred = infer_layout(shapes, meta.get("subsample_factor"))
    if isinstance(inferred, DescribedPlan):
        return ProjectorChoice("described", described=inferred)
    code = (f"build it with the adapter's own audio.AudioProjector: pass {TRUST_HINT}, or "
            if has_projector_code(adapter) else "")
    raise CheckpointError(f"{adapter}: the projector's layout cannot be inferred ({inferred}); {code}describe it "
                          f"in {PROJECTOR_META_FILE}. Projector tensors: "
                          + ", ".join(f"{n} {list(s)}" for n, s in shapes.items()))


def published_config(adapter: Path, meta: dict[str, Any]) -> AsrConfig:
    """The published adapter's contract: Gemma-4 prompt and decoding defaults, ids it states, file overrides."""
    values: dict[str, Any] = {"prompt_template": GEMMA4_TEMPLATE, **GEMMA4_AUDIO, "canvas_length": PUBLISHED_CANVAS,
                              "default_steps": PUBLISHED_STEPS,
                              "final_logit_softcapping": float(meta.get("final_logit_softcapping", PUBLISHED_SOFTCAP))}
    overrides = _json(adapter / ASR_CONFIG_FILE)
    values.update(overrides)
    stated = {values[field]: int(meta[key]) for key, field in STATED_IDS.items() if key in meta and values.get(field)}
    values.setdefault("stated_token_ids", stated or None)
    try:
        return AsrConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{adapter / ASR_CONFIG_FILE}: {exc}") from None


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _load(entries: dict) -> dict[str, torch.Tensor]:
    """Tensors by their plan names, each file read once."""
    by_file: dict[Path, dict[str, torch.Tensor]] = {}
    out = {}
    for key, (weight_file, info) in entries.items():
        if weight_file.path not in by_file:
            by_file[weight_file.path] = weight_file.load()
        out[key] = by_file[weight_file.path][info.name]
    return out
