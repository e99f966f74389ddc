"""The adapter's own projector class (`audio.AudioProjector`), run only when the operator trusts the adapter's code
(`--trust-adapter-code` / `ASR_TRUST_ADAPTER_CODE=1`, off by default, as transformers' `trust_remote_code`).

The class is built from the adapter's config values and loaded with the saved projector tensors, strictly; the
same module, walked layer by layer, gives the data description `import-adapter` writes, checked output for output.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.checkpoint.errors import CheckpointError
from app.model.projector import ConvLayer, DescribedProjector, ForeignProjector, LinearLayer, ProjectorLayout

AUDIO_SOURCE = "audio.py"
PROJECTOR_CLASS = "AudioProjector"
TRUST_HINT = "--trust-adapter-code (ASR_TRUST_ADAPTER_CODE=1)"
_ACTIVATION_MODULES = {nn.GELU: "gelu", nn.ReLU: "relu", nn.SiLU: "silu", nn.Tanh: "tanh"}


def has_projector_code(adapter: Path) -> bool:
    """Whether the adapter ships `audio.py`."""
    return (adapter / AUDIO_SOURCE).is_file()


def build_code_projector(adapter: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> ForeignProjector:
    """`audio.AudioProjector` built from the adapter's config values, its saved tensors loaded strictly."""
    cls = _import_class(adapter)
    module = _construct(cls, meta)
    own = module.state_dict()
    prefix = _best_prefix(set(own), set(tensors))
    unused = sorted(set(tensors) - {prefix + k for k in own})
    missing = sorted(k for k in own if prefix + k not in tensors)
    if unused or missing:
        raise CheckpointError(f"{adapter / AUDIO_SOURCE}: {PROJECTOR_CLASS} does not take the saved projector "
                              f"tensors one for one (under prefix {prefix!r}): unused {_few(unused) or 'none'}; "
                              f"missing {_few(missing) or 'none'}")
    module.load_state_dict({k: tensors[prefix + k] for k in own}, strict=True)
    encoder_width = int(meta.get("whisper_dim") or _first_width(module))
    return ForeignProjector(module.eval(), encoder_width, int(meta.get("subsample_factor", 8)))


def describe_module(projector: ForeignProjector) -> tuple[ProjectorLayout, dict[str, str]]:
    """The module as a `ProjectorLayout` (own tensor name -> the module's), when its layers are plain
    Conv1d / Linear / activation modules in forward order; checked by running both on one random input."""
    layers: list[ConvLayer | LinearLayer] = []
    names: list[str] = []
    for name, child in projector.module.named_modules():
        if isinstance(child, nn.Conv1d):
            layers.append(ConvLayer(child.in_channels, child.out_channels, child.kernel_size[0], child.stride[0],
                                    int(child.padding[0]), None, child.bias is not None))
            names.append(name)
        elif isinstance(child, nn.Linear):
            layers.append(LinearLayer(child.in_features, child.out_features, None, child.bias is not None))
            names.append(name)
        elif type(child) in _ACTIVATION_MODULES and layers:
            layers[-1] = _with_activation(layers[-1], _activation_name(child))
    convs = tuple(x for x in layers if isinstance(x, ConvLayer))
    linears = tuple(x for x in layers if isinstance(x, LinearLayer))
    if not layers or layers != [*convs, *linears]:
        raise CheckpointError(f"{PROJECTOR_CLASS} is not a conv stack followed by linear layers; serve it with "
                              f"{TRUST_HINT}")
    own = [f"convs.{i}" for i in range(len(convs))] + [f"linears.{i}" for i in range(len(linears))]
    keys = {f"{o}.{leaf}": f"{n}.{leaf}" for o, n, x in zip(own, names, layers)
            for leaf in (("weight", "bias") if x.bias else ("weight",))}
    layout = ProjectorLayout(convs, linears)
    _check_same(projector, layout, keys)
    return layout, keys


def _check_same(projector: ForeignProjector, layout: ProjectorLayout, keys: dict[str, str]) -> None:
    state = projector.module.state_dict()
    described = DescribedProjector(layout)
    described.load_state_dict({own: state[theirs] for own, theirs in keys.items()}, strict=True)
    frames = torch.randn(1, 8 * max(1, projector.subsample), projector.encoder_width,
                         generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = described(frames.to(next(described.parameters()).dtype)), projector(frames)
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, atol=1e-6, rtol=0):
        raise CheckpointError(f"{PROJECTOR_CLASS} computes something its layers alone do not describe (padding, "
                              f"functional activations or other steps in its forward); serve it with {TRUST_HINT}")


def _import_class(adapter: Path) -> type[nn.Module]:
    """`AudioProjector` from the adapter's `audio.py`, its sibling modules importable while it loads."""
    source = adapter / AUDIO_SOURCE
    name = f"_adapter_audio_{abs(hash(str(adapter.resolve())))}"
    saved = {k: sys.modules.pop(k) for k in ("model", "audio") if k in sys.modules}
    sys.path.insert(0, str(adapter))
    try:
        spec = importlib.util.spec_from_file_location(name, source)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:  # the adapter's own code: any failure is reported, not raised as-is
        raise CheckpointError(f"{source}: importing it failed: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(adapter))
        for key in ("model", "audio"):
            sys.modules.pop(key, None)
        sys.modules.update(saved)
    cls = getattr(module, PROJECTOR_CLASS, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise CheckpointError(f"{source} defines no {PROJECTOR_CLASS} module class")
    return cls


def _construct(cls: type[nn.Module], meta: dict[str, Any]) -> nn.Module:
    """Call the constructor with the config values its parameters are named after (a `config`/`cfg` parameter
    gets all of them as attributes)."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    kwargs: dict[str, Any] = {}
    for p in params:
        if p.name in ("config", "cfg"):
            kwargs[p.name] = _Namespace(meta)
        elif p.name in meta:
            kwargs[p.name] = meta[p.name]
        elif p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise CheckpointError(f"{PROJECTOR_CLASS}({p.name}=...): the adapter's model.py states no {p.name!r} "
                                  "as a literal; add it to a config.json next to the weights")
    try:
        return cls(**kwargs)
    except Exception as exc:  # the adapter's own code
        raise CheckpointError(f"{PROJECTOR_CLASS}(...) failed: {type(exc).__name__}: {exc}") from None


class _Namespace:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _best_prefix(own: set[str], saved: set[str]) -> str:
    """The prefix under which most saved names are the module's own names."""
    candidates = {name[: len(name) - len(k)] for name in saved for k in own if name.endswith(k)} or {""}
    return max(sorted(candidates), key=lambda p: sum(p + k in saved for k in own))


def _few(names) -> str:
    names = sorted(names)
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def _first_width(module: nn.Module) -> int:
    for child in module.modules():
        if isinstance(child, nn.Conv1d):
            return child.in_channels
        if isinstance(child, nn.Linear):
            return child.in_features
    raise CheckpointError(f"{PROJECTOR_CLASS}: no conv or linear layer to read its input width from")


def _activation_name(module: nn.Module) -> str:
    if isinstance(module, nn.GELU) and module.approximate == "tanh":
        return "gelu_tanh"
    return _ACTIVATION_MODULES[type(module)]


def _with_activation(layer: ConvLayer | LinearLayer, name: str) -> ConvLayer | LinearLayer:
    from dataclasses import replace

    return replace(layer, activation=name)
