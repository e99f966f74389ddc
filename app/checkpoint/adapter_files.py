"""An adapter directory's weights found by content: every tensor file under it, each tensor's name, shape and
dtype, and which tensors are LoRA (a peft adapter) and which are left for the projector.

Nothing here depends on file names the project chose: a published adapter names its files as its authors did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from app.checkpoint.errors import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # peft's own file names
MAX_DEPTH = 2  # the folder itself and its sub-folders' sub-folders (a peft adapter often sits one level down)


@dataclass(frozen=True)
class TensorInfo:
    """One saved tensor as its file describes it (nothing is read into memory)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class WeightFile:
    """One tensor file and the tensors in it."""

    path: Path
    tensors: dict[str, TensorInfo]
    peft: bool  # peft's adapter weight file, next to its `adapter_config.json`

    def load(self) -> dict[str, torch.Tensor]:
        """The file's tensors on the CPU (`.bin`/`.pt` through torch's weights-only loader: no code runs)."""
        return read_tensors(self.path)


@dataclass
class AdapterFiles:
    """What an adapter directory holds, sorted into LoRA and projector candidates."""

    root: Path
    files: list[WeightFile]
    peft_dirs: list[Path]
    lora: dict[str, tuple[WeightFile, TensorInfo]] = field(default_factory=dict)
    projector: dict[str, tuple[WeightFile, TensorInfo]] = field(default_factory=dict)
    unused: dict[str, tuple[WeightFile, TensorInfo]] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per weight file with its tensor count and total parameters: what an error message shows."""
        if not self.files:
            return f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {self.root}"
        lines = []
        for f in self.files:
            params = sum(_numel(t.shape) for t in f.tensors.values())
            peft = " (peft adapter)" if f.peft else ""
            lines.append(f"{f.path.relative_to(self.root)}{peft}: {len(f.tensors)} tensors, {params:,} parameters")
        if self.peft_dirs:
            lines.append("peft adapter_config.json in: " +
                         ", ".join(str(d.relative_to(self.root) or ".") for d in self.peft_dirs))
        return "; ".join(lines)


def is_lora_tensor(name: str) -> bool:
    """A peft LoRA tensor name (`...q_proj.lora_A.weight`, and peft's other `lora_*` tensors)."""
    return any(part.startswith("lora_") for part in name.split("."))


def scan_adapter(root: Path) -> AdapterFiles:
    """Every weight file under `root` (hidden folders such as download caches skipped), sorted by role."""
    if not root.is_dir():
        raise CheckpointError(f"adapter directory not found: {root}")
    paths = sorted(p for p in _walk(root, 0) if p.suffix in WEIGHT_SUFFIXES)
    peft_dirs = sorted({p.parent for p in _walk(root, 0) if p.name == PEFT_CONFIG})
    files = [WeightFile(p, read_tensor_infos(p), p.parent in peft_dirs and p.name in PEFT_WEIGHTS) for p in paths]
    found = AdapterFiles(root, files, peft_dirs)
    for f in files:
        for name, info in f.tensors.items():
            key = _unique_key(found, f, name)
            if is_lora_tensor(name):
                found.lora[key] = (f, info)
            elif f.peft:
                found.unused[key] = (f, info)  # e.g. peft's modules_to_save: not a LoRA this project applies
            else:
                found.projector[key] = (f, info)
    return found


def require_weights(found: AdapterFiles) -> None:
    """Fail, saying what was found, unless there are projector tensors, LoRA tensors and one peft config."""
    if not found.projector:
        raise CheckpointError(f"{found.root}: no projector weights found ({found.summary()})")
    if not found.lora:
        raise CheckpointError(f"{found.root}: no LoRA (peft lora_A/lora_B) tensors found ({found.summary()})")
    if not found.peft_dirs:
        raise CheckpointError(f"{found.root}: LoRA tensors found but no peft adapter_config.json, so their rank "
                              "and scale are unknown; write one next to them, e.g. "
                              f'{{"peft_type": "LORA", "r": 16, "lora_alpha": 32}} ({found.summary()})')
    if len(found.peft_dirs) > 1:
        where = ", ".join(str(d) for d in found.peft_dirs)
        raise CheckpointError(f"{found.root}: more than one peft adapter_config.json ({where}); keep the one "
                              f"that belongs to the LoRA weights ({found.summary()})")


def read_tensor_infos(path: Path) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes of one file's tensors; a file that is no state dict is a `CheckpointError`."""
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                return {name: _info(name, handle.get_slice(name)) for name in handle.keys()}
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    return {name: TensorInfo(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))
            for name, t in read_tensors(path).items()}


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """One file's tensors, a nested `.bin`/`.pt` dict flattened to dotted names."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        data = _torch_load(path)
    except Exception as exc:  # pickle and zip errors of every kind: the file is not a plain state dict
        raise CheckpointError(f"{path}: not a state dict torch can load without running code ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}, not a state dict")
    return _flatten(data, "")


def _torch_load(path: Path):
    """Weights-only load, memory-mapped when the file is in torch's zip format (older files are not)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _flatten(data: dict, prefix: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, dict):
            out.update(_flatten(value, name + "."))
    return out


def _walk(root: Path, depth: int):
    for path in sorted(root.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() and depth < MAX_DEPTH:
            yield from _walk(path, depth + 1)
        elif path.is_file():
            yield path


def _info(name: str, tensor_slice) -> TensorInfo:
    dtype = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64"}
    raw = tensor_slice.get_dtype()
    return TensorInfo(name, tuple(tensor_slice.get_shape()), dtype.get(raw, raw.lower()))


def _unique_key(found: AdapterFiles, f: WeightFile, name: str) -> str:
    """The tensor's name, prefixed by its file when another file has the same name."""
    clash = any(name in other.tensors for other in found.files if other is not f)
    return f"{f.path.relative_to(found.root)}:{name}" if clash else name


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n
