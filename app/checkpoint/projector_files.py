"""The projector of an adapter from its saved tensors: described by `projector.json`, or inferred from the shapes.

`projector.json` describes the network as data (widths come from the tensors):
```
{"conv": [{"kernel": 3, "stride": 2, "padding": 1, "activation": "gelu"}, ...],
 "linear": [{"activation": "gelu"}, {"activation": null}],
 "pad_to_multiple": false,
 "keys": {"convs.0": "audio_projector.conv1", "linears.0": "audio_projector.out", ...}}
```
`keys` maps each layer (`convs.N`, `linears.N`) to the saved module prefix; without it the saved layers are taken
in name order (numbers compared as numbers), 3-D weights as convs, then 2-D weights as linears.
Every saved tensor must be used and every layer filled, or loading fails naming the tensors.

The project's own projector (`app.model.projector.Projector`) keeps its module names (`conv`, `proj`,
`context.N`), and its `projector.json` holds what the tensors do not: `{"subsample": 2}`, plus
`"context_layers"` and `"context_heads"` when it has transformer layers over its slots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from app.checkpoint.errors import CheckpointError
from app.model.projector import ConvLayer, DescribedProjector, LinearLayer, Projector, ProjectorLayout, SlotContext

OWN_PROJECTOR_TENSORS = frozenset({"conv.weight", "conv.bias", "proj.weight", "proj.bias"})


@dataclass(frozen=True)
class DescribedPlan:
    """A projector layout and where each of its tensors comes from (its name -> saved name)."""

    layout: ProjectorLayout
    keys: dict[str, str]
    source: str  # "projector.json" or "inferred from tensor shapes"
    assumptions: tuple[str, ...] = ()

    def build(self, tensors: dict[str, torch.Tensor]) -> DescribedProjector:
        """The projector with the saved tensors loaded (strict: every layer tensor must be present)."""
        projector = DescribedProjector(self.layout)
        projector.load_state_dict({own: tensors[saved] for own, saved in self.keys.items()}, strict=True)
        return projector


def is_own_projector(names: set[str] | frozenset[str]) -> bool:
    """Whether saved tensor names are the project's own projector's (conv, linear, optional context layers)."""
    return OWN_PROJECTOR_TENSORS <= names and all(n in OWN_PROJECTOR_TENSORS or n.startswith("context.") for n in names)


def own_projector_json(projector: Projector) -> dict[str, Any]:
    """`projector.json` for the project's own projector: what its tensors do not say."""
    spec: dict[str, Any] = {"subsample": projector.subsample}
    if projector.context_spec.layers:
        spec |= {"context_layers": projector.context_spec.layers, "context_heads": projector.context_spec.heads}
    return spec


def own_projector(spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Projector:
    """The project's own projector from its `projector.json` and saved tensors (strict: every tensor used)."""
    try:
        width, encoder_width, kernel = tensors["conv.weight"].shape
        hidden = tensors["proj.weight"].shape[0]
        layers = int(spec.get("context_layers", 0))
        context = SlotContext(layers, int(spec.get("context_heads", SlotContext.heads)),
                              tensors["context.0.linear1.weight"].shape[0] if layers else SlotContext.ffn)
        projector = Projector(encoder_width, width, hidden, int(spec.get("subsample", kernel)), context)
        projector.load_state_dict(tensors)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"projector: the saved tensors do not match projector.json {spec}: {exc}") from None
    return projector


def layer_groups(shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """Saved tensors grouped by module prefix (`a.b.weight` -> `a.b`: {"weight": shape}), in natural name order."""
    groups: dict[str, dict[str, tuple[int, ...]]] = {}
    for name in sorted(shapes, key=_natural):
        prefix, _, leaf = name.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = shapes[name]
    return groups


def describe_from_json(spec: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> DescribedPlan:
    """The plan `projector.json` describes, widths read from the saved shapes."""
    try:
        convs, linears = list(spec.get("conv", [])), list(spec.get("linear", []))
        own = [f"convs.{i}" for i in range(len(convs))] + [f"linears.{i}" for i in range(len(linears))]
        groups = layer_groups(shapes)
        prefixes = [spec["keys"][name] for name in own] if "keys" in spec else list(groups)
        if len(prefixes) != len(own):
            raise ValueError(f"describes {len(own)} layers but the tensors hold {len(prefixes)}: {', '.join(groups)}")
        layers = []
        for name, prefix, entry in zip(own, prefixes, convs + linears):
            weight = groups.get(prefix, {}).get("weight")
            if weight is None:
                raise ValueError(f"layer {name}: no saved tensor {prefix}.weight")
            bias = "bias" in groups.get(prefix, {})
            if name.startswith("convs"):
                if int(entry.get("kernel", weight[2])) != weight[2]:
                    raise ValueError(f"layer {name}: kernel {entry['kernel']} but {prefix}.weight has {weight[2]}")
                layers.append(ConvLayer(weight[1], weight[0], weight[2], int(entry["stride"]),
                                        int(entry.get("padding", 0)), entry.get("activation"), bias))
            else:
                layers.append(LinearLayer(weight[1], weight[0], entry.get("activation"), bias))
        layout = ProjectorLayout(tuple(layers[: len(convs)]), tuple(layers[len(convs):]),
                                 bool(spec.get("pad_to_multiple", False)))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise CheckpointError(f"projector.json: {exc}") from None
    return DescribedPlan(layout, _key_map(own, prefixes, groups, shapes), "projector.json")


def infer_layout(shapes: dict[str, tuple[int, ...]], subsample: int | None) -> DescribedPlan | str:
    """The plan the shapes allow when only one reading fits; else a sentence saying why not.

    Strides and padding are not in the tensors: a conv stack is read only when its kernels multiply to the
    stated subsampling (kernel = stride, no overlap, frames padded to a multiple, as the project's own
    projector is built). Activations are not in the tensors either: GELU between layers is assumed and said so.
    """
    groups = layer_groups(shapes)
    odd = [f"{p}.{leaf}" for p, g in groups.items() for leaf in g if leaf not in ("weight", "bias")]
    if odd or any("weight" not in g for g in groups.values()):
        return f"tensors that are no conv or linear layer: {', '.join(odd or groups)}"
    ranks = [len(g["weight"]) for g in groups.values()]
    if any(r not in (2, 3) for r in ranks) or ranks != sorted(ranks, reverse=True):
        return "not a conv stack followed by linear layers (weights of rank " + ", ".join(map(str, ranks)) + ")"
    kernels = [g["weight"][2] for g in groups.values() if len(g["weight"]) == 3]
    product = 1
    for k in kernels:
        product *= k
    if subsample is None or product != subsample:
        return (f"conv kernels {kernels} do not multiply to the subsampling {subsample}: strides and padding "
                "cannot be read from the shapes")
    layers: list[ConvLayer | LinearLayer] = []
    last = len(groups) - 1
    for i, g in enumerate(groups.values()):
        w, act = g["weight"], (None if i == last else "gelu")
        layers.append(ConvLayer(w[1], w[0], w[2], w[2], 0, act, "bias" in g) if len(w) == 3
                      else LinearLayer(w[1], w[0], act, "bias" in g))
    n_conv = len(kernels)
    try:
        layout = ProjectorLayout(tuple(layers[:n_conv]), tuple(layers[n_conv:]), pad_to_multiple=True)
    except ValueError as exc:
        return str(exc)
    own = [f"convs.{i}" for i in range(n_conv)] + [f"linears.{i}" for i in range(len(groups) - n_conv)]
    return DescribedPlan(layout, _key_map(own, list(groups), groups, shapes), "inferred from tensor shapes",
                         ("GELU after every layer but the last (activations are not stored in the weights)",))


def layout_to_json(layout: ProjectorLayout) -> dict[str, Any]:
    """`projector.json` for a layout saved under its own tensor names (no `keys` needed)."""
    return {"conv": [{"kernel": c.kernel, "stride": c.stride, "padding": c.padding, "activation": c.activation}
                     for c in layout.convs],
            "linear": [{"activation": lin.activation} for lin in layout.linears],
            "pad_to_multiple": layout.pad_to_multiple}


def _key_map(own: list[str], prefixes: list[str], groups: dict, shapes: dict) -> dict[str, str]:
    """Own tensor name -> saved name; every saved tensor used once, or `CheckpointError` names the rest."""
    keys = {f"{o}.{leaf}": f"{p}.{leaf}" for o, p in zip(own, prefixes) for leaf in groups.get(p, {})}
    unused = sorted(set(shapes) - set(keys.values()))
    if unused:
        raise CheckpointError(f"projector tensors the described layers do not use: {', '.join(unused)}")
    return keys


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
