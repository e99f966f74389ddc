"""Strict LoRA loading: every saved LoRA tensor lands in a layer of the backbone, or start-up fails naming it.

peft's own loader warns and carries on when saved names do not match the model (a LoRA saved from a wrapper
module, under another prefix): the backbone then serves without its adapter, every `lora_B` still zero. Here
the saved names are planned against the backbone's module names before any weight loads, a prefix saved from a
wrapper is rewritten when exactly one rewrite fits every name, and the weights are copied by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

from app.checkpoint.adapter_files import PEFT_CONFIG
from app.checkpoint.errors import CheckpointError

PEFT_SAVE_PREFIX = "base_model.model."  # what `PeftModel.save_pretrained` puts before the model's own names
ADAPTER_NAME = "default"
_SHOWN = 8  # names listed in an error before "and N more"


@dataclass(frozen=True)
class LoraPlan:
    """Where each saved LoRA tensor goes: saved name -> (backbone module, "A" or "B")."""

    targets: dict[str, tuple[str, str]]
    rank: int
    alpha: float
    use_rslora: bool
    rewrite: tuple[str, str] | None  # (saved prefix, backbone prefix) when names were remapped

    @property
    def modules(self) -> list[str]:
        """The backbone modules that get a LoRA."""
        return sorted({module for module, _ in self.targets.values()})

    def peft_config(self) -> LoraConfig:
        """A peft config that wraps exactly the planned modules (nothing matched by a loose pattern)."""
        pattern = "|".join(m.replace(".", r"\.") for m in self.modules)
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, use_rslora=self.use_rslora, lora_dropout=0.0,
                          bias="none", target_modules=f"(?:{pattern})")


def read_peft_config(peft_dir: Path) -> dict:
    """The adapter's `adapter_config.json`; only a LoRA adapter is accepted."""
    path = peft_dir / PEFT_CONFIG
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if data.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{path}: peft_type {data.get('peft_type')!r} is not LORA")
    if data.get("use_dora"):
        raise CheckpointError(f"{path}: DoRA adapters (use_dora) are not supported")
    patterns = [key for key in ("rank_pattern", "alpha_pattern") if data.get(key)]
    if patterns:  # per-layer ranks or scales this loader would silently ignore
        raise CheckpointError(f"{path}: per-layer {' and '.join(patterns)} are not supported")
    return data


def backbone_module_names(backbone: Path) -> dict[str, tuple[int, int]]:
    """The backbone's Linear layers (name -> in, out features), from its config alone (built on the meta
    device: no weights)."""
    try:
        config = DiffusionGemmaConfig.from_pretrained(str(backbone), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{backbone}: cannot read the backbone config ({exc})") from None
    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(config)
    return module_names(model)


def module_names(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """A model's Linear layers (what a LoRA can wrap): name -> (in, out features)."""
    return {name: (module.in_features, module.out_features) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)}


def plan_lora(saved: dict[str, tuple[int, ...]], modules: dict[str, tuple[int, int]], peft_config: dict) -> LoraPlan:
    """Map saved LoRA tensor names (with shapes) onto backbone modules (name -> in, out features);
    `CheckpointError` names what fails."""
    parsed, odd = {}, []
    for name in saved:
        found = _parse(name)
        (odd.append(name) if found is None else parsed.__setitem__(name, found))
    if odd:
        raise CheckpointError(f"LoRA tensors of a kind this project does not apply: {_names(odd)}")
    if not parsed:
        raise CheckpointError("the peft adapter holds no lora_A/lora_B tensors")
    paths = {p for p, _ in parsed.values()}
    rewrite = _choose_rewrite(paths, set(modules))
    targets = {name: (_apply(rewrite, path), part) for name, (path, part) in parsed.items()}
    ranks = {shape[0] for name, shape in saved.items() if parsed[name][1] == "A"}
    rank = int(peft_config.get("r", next(iter(ranks)) if len(ranks) == 1 else 0))
    if ranks - {rank}:
        raise CheckpointError(f"LoRA ranks in the tensors {sorted(ranks)} differ from adapter_config.json's r={rank}")
    wrong = [name for name, (module, part) in targets.items()
             if tuple(saved[name]) != _lora_shape(modules[module], part, rank)]  # type: ignore[index]
    if wrong:
        raise CheckpointError(f"LoRA tensors whose shape does not fit their backbone layer: {_names(wrong)}")
    return LoraPlan(targets, rank, float(peft_config.get("lora_alpha", rank)), bool(peft_config.get("use_rslora")),
                    rewrite if rewrite != ("", "") else None)


def apply_lora(model: torch.nn.Module, plan: LoraPlan, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Wrap the planned modules with LoRA and copy every saved tensor in; fail on any left over or all-zero B."""
    model = inject_adapter_in_model(plan.peft_config(), model, adapter_name=ADAPTER_NAME)
    params = dict(model.named_parameters())
    wanted = {n for n in params if ".lora_A." in n or ".lora_B." in n}
    filled, unmatched = set(), []
    for name, (module, part) in plan.targets.items():
        key = f"{module}.lora_{part}.{ADAPTER_NAME}.weight"
        if key not in params or params[key].shape != tensors[name].shape:
            unmatched.append(name)
            continue
        with torch.no_grad():
            params[key].copy_(tensors[name].to(params[key].dtype))
        filled.add(key)
    if unmatched:
        raise CheckpointError(f"LoRA tensors that match no backbone layer (name or shape): {_names(unmatched)}")
    if wanted - filled:
        raise CheckpointError(f"LoRA layers with no saved tensor: {_names(sorted(wanted - filled))}")
    if not any(part == "B" and bool(tensors[name].any()) for name, (_, part) in plan.targets.items()):
        raise CheckpointError("every saved lora_B is zero: the adapter would change nothing (an untrained or "
                              "wrongly saved LoRA)")
    return model


def _lora_shape(features: tuple[int, int], part: str, rank: int) -> tuple[int, int]:
    """lora_A is [rank, in], lora_B is [out, rank]."""
    return (rank, features[0]) if part == "A" else (features[1], rank)


def _parse(name: str) -> tuple[str, str] | None:
    """`<module>.lora_A.weight` (or `.lora_A.<adapter>.weight`) -> (module path, "A"); other names: None."""
    name = name.removeprefix(PEFT_SAVE_PREFIX)
    for part in ("A", "B"):
        module, sep, rest = name.partition(f".lora_{part}.")
        if sep and rest.endswith("weight") and rest.count(".") <= 1:
            return module, part
    return None


def _choose_rewrite(paths: set[str], modules: set[str]) -> tuple[str, str]:
    """The one prefix rewrite that puts every saved module path on a backbone module ("" -> "": none needed)."""
    if paths <= modules:
        return ("", "")
    sample = min(paths)
    fitting = {}
    for candidate in {_rewrite_between(sample, m) for m in modules} - {None}:
        mapped = frozenset(_apply(candidate, p) for p in paths)
        if all(p is not None for p in mapped) and mapped <= modules:
            fitting.setdefault(mapped, candidate)
    if len(fitting) == 1:
        return next(iter(fitting.values()))
    missing = sorted(paths - modules)
    if not fitting:
        raise CheckpointError(f"LoRA module names match no backbone layer, under any prefix: {_names(missing)}")
    options = "; ".join(f"{old or '(none)'} -> {new or '(none)'}" for old, new in fitting.values())
    raise CheckpointError(f"LoRA module names fit the backbone under more than one prefix ({options}): "
                          f"{_names(missing)}")


def _rewrite_between(path: str, module: str) -> tuple[str, str] | None:
    """(old prefix, new prefix) turning `path` into `module` by their longest common dotted suffix."""
    a, b = path.split("."), module.split(".")
    k = 0
    while k < min(len(a), len(b)) and a[-1 - k] == b[-1 - k]:
        k += 1
    return (".".join(a[: len(a) - k]), ".".join(b[: len(b) - k])) if k else None


def _apply(rewrite: tuple[str, str], path: str) -> str | None:
    old, new = rewrite
    if not old:
        return f"{new}.{path}" if new else path
    if path != old and not path.startswith(old + "."):
        return None
    rest = path[len(old) + 1:]
    return f"{new}.{rest}" if new else rest


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
