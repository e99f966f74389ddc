"""Stage 2: the projector maps Whisper frames to backbone embeddings (the trained part with LoRA).

Three forms, one interface (`subsample`, `slots(frames)`, `out_features`, `forward`): the project's own
conv + linear (+ transformer layers over the slots), a network described as data (`ProjectorLayout`, for
adapters published elsewhere), and an adapter's own module built from its code (`ForeignProjector`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


ENCODER_FRAME_SAMPLES = 160 * 2  # Whisper: mel hop 160 samples, then its stride-2 conv


def slot_samples(subsample: int) -> int:
    """Audio samples (16 kHz) per projector slot."""
    return ENCODER_FRAME_SAMPLES * subsample


def audio_slots(num_samples: int, subsample: int, max_slots: int) -> int:
    """Projector slots covering `num_samples` of audio (mel hop 160, Whisper stride 2, projector subsample),
    at most the window's `max_slots`: the CTC input length of a clip."""
    per_slot = slot_samples(subsample)
    return min(max_slots, -(-int(num_samples) // per_slot) + 1)


@dataclass(frozen=True)
class SlotContext:
    """Pre-norm transformer layers over the projector's slots, after its linear map (`layers` 0: none).

    Without them each slot sees only its own `subsample` frames. They add no positions of their own: Whisper's
    outputs already carry its sinusoidal position embeddings in their residual stream. No padding mask either:
    training and serving both project the whole window, silence included, so a slot's context is the same in both
    (a batch cut to its longest clip passes `real_slots` to `Projector.forward` instead).
    """

    layers: int = 0
    heads: int = 4
    ffn: int = 1024
    dropout: float = 0.1

    def check(self, hidden: int) -> None:
        """ValueError unless the layers fit a `hidden`-wide slot (attention splits it across the heads)."""
        if self.layers and hidden % self.heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of {self.heads} context heads")


class Projector(nn.Module):
    """Conv1d subsampling (kernel = stride = `subsample`), a linear map to the backbone's hidden size, then the
    `SlotContext` layers when it has any.

    The frame axis is zero-padded up to a multiple of `subsample`, so Whisper's 1500 frames give 188 slots.
    """

    def __init__(self, encoder_width: int, width: int, hidden: int, subsample: int = 8,
                 context: SlotContext = SlotContext()) -> None:
        super().__init__()
        context.check(hidden)
        self.subsample = subsample
        self.context_spec = context
        self.conv = nn.Conv1d(encoder_width, width, kernel_size=subsample, stride=subsample)
        self.proj = nn.Linear(width, hidden)
        self.context = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden, context.heads, context.ffn, context.dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(context.layers))

    def slots(self, frames: int) -> int:
        """Output length for `frames` input frames."""
        return -(-frames // self.subsample)

    @property
    def out_features(self) -> int:
        """Width of each output slot."""
        return self.proj.out_features

    def forward(self, frames: torch.Tensor, real_slots: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, T, encoder_width]` -> `[B, ceil(T / subsample), hidden]`.

        `real_slots` `[B]` keeps the context layers from attending past each row's count (for batches cut to
        their longest clip); None: every slot is real, as a whole window is.
        """
        pad = self.slots(frames.shape[1]) * self.subsample - frames.shape[1]
        x = F.pad(frames.transpose(1, 2), (0, pad))
        x = self.proj(F.gelu(self.conv(x)).transpose(1, 2))
        padding = None if real_slots is None else \
            torch.arange(x.shape[1], device=x.device)[None] >= real_slots.to(x.device)[:, None]
        for layer in self.context:
            x = layer(x, src_key_padding_mask=padding)
        return x


def with_context(projector: Projector, context: SlotContext) -> Projector:
    """A copy of a projector without context layers, with `context`'s layers added and silent: their output
    projections start at zero, so (pre-norm residual layers) it computes what the original does until they learn.
    """
    if projector.context_spec.layers:
        raise ValueError(f"not a projector without context layers: it has {projector.context_spec.layers}")
    grown = Projector(projector.conv.in_channels, projector.conv.out_channels, projector.out_features,
                      projector.subsample, context)
    grown.load_state_dict(projector.state_dict(), strict=False)  # conv and proj; the context layers are new
    with torch.no_grad():
        for layer in grown.context:
            for linear in (layer.self_attn.out_proj, layer.linear2):
                linear.weight.zero_()
                linear.bias.zero_()
    return grown


# Activations a described projector may use between its layers, by the names `projector.json` gives them.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "tanh": torch.tanh,
}


@dataclass(frozen=True)
class ConvLayer:
    """One Conv1d over the frame axis, and the activation after it (None: none)."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int = 0
    activation: str | None = "gelu"
    bias: bool = True


@dataclass(frozen=True)
class LinearLayer:
    """One Linear over each slot, and the activation after it (None: none)."""

    in_features: int
    out_features: int
    activation: str | None = None
    bias: bool = True


@dataclass(frozen=True)
class ProjectorLayout:
    """A projector as data: conv layers over frames, then linear layers per slot.

    `pad_to_multiple` zero-pads the frame axis up to a multiple of the total stride first (the project's own
    projector does; a padded conv stack usually does not need it).
    """

    convs: tuple[ConvLayer, ...]
    linears: tuple[LinearLayer, ...]
    pad_to_multiple: bool = False

    def __post_init__(self) -> None:
        widths = [(c.in_channels, c.out_channels) for c in self.convs]
        widths += [(lin.in_features, lin.out_features) for lin in self.linears]
        if not widths:
            raise ValueError("a projector needs at least one layer")
        for (_, out), (nxt, _) in zip(widths, widths[1:]):
            if out != nxt:
                raise ValueError(f"layer widths do not chain: {out} -> {nxt}")
        for name in [c.activation for c in self.convs] + [lin.activation for lin in self.linears]:
            if name is not None and name not in ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")

    @property
    def subsample(self) -> int:
        """Frames per output slot (the product of the conv strides)."""
        return math.prod(c.stride for c in self.convs)

    def padded(self, frames: int) -> int:
        """Frames after the optional padding to a multiple of the subsampling."""
        return -(-frames // self.subsample) * self.subsample if self.pad_to_multiple else frames

    def slots(self, frames: int) -> int:
        """Output length for `frames` input frames (the conv arithmetic)."""
        length = self.padded(frames)
        for c in self.convs:
            length = (length + 2 * c.padding - c.kernel) // c.stride + 1
        return length


class DescribedProjector(nn.Module):
    """A projector built from a `ProjectorLayout`; its tensors are `convs.N.*` and `linears.N.*`."""

    def __init__(self, layout: ProjectorLayout) -> None:
        super().__init__()
        self.layout = layout
        self.subsample = layout.subsample
        self.convs = nn.ModuleList(nn.Conv1d(c.in_channels, c.out_channels, c.kernel, stride=c.stride,
                                             padding=c.padding, bias=c.bias) for c in layout.convs)
        self.linears = nn.ModuleList(nn.Linear(lin.in_features, lin.out_features, bias=lin.bias)
                                     for lin in layout.linears)

    @property
    def out_features(self) -> int:
        """Width of each output slot (the backbone's hidden size when it fits)."""
        last = self.layout.linears[-1].out_features if self.layout.linears else self.layout.convs[-1].out_channels
        return last

    def slots(self, frames: int) -> int:
        """Output length for `frames` input frames."""
        return self.layout.slots(frames)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """`[B, T, encoder_width]` -> `[B, slots(T), out_features]`."""
        x = F.pad(frames.transpose(1, 2), (0, self.layout.padded(frames.shape[1]) - frames.shape[1]))
        for conv, spec in zip(self.convs, self.layout.convs):
            x = _activate(conv(x), spec.activation)
        x = x.transpose(1, 2)
        for linear, spec in zip(self.linears, self.layout.linears):
            x = _activate(linear(x), spec.activation)
        return x


class ForeignProjector(nn.Module):
    """An adapter's own projector module (built from its code), with the interface the pipeline needs.

    Its output length is measured, not computed: the module is opaque, so one zero window tells the slots.
    """

    def __init__(self, module: nn.Module, encoder_width: int, subsample: int) -> None:
        super().__init__()
        self.module = module
        self.encoder_width = encoder_width
        self.subsample = subsample

    @torch.no_grad()
    def _probe(self, frames: int) -> torch.Tensor:
        param = next(self.module.parameters())
        return self.module(torch.zeros(1, frames, self.encoder_width, dtype=param.dtype, device=param.device))

    def slots(self, frames: int) -> int:
        """Output length for `frames` input frames."""
        return int(self._probe(frames).shape[1])

    @property
    def out_features(self) -> int:
        """Width of each output slot."""
        return int(self._probe(self.subsample).shape[-1])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """`[B, T, encoder_width]` -> `[B, slots, out_features]`, as the adapter's module computes it."""
        return self.module(frames)


AnyProjector = Projector | DescribedProjector | ForeignProjector


def _activate(x: torch.Tensor, name: str | None) -> torch.Tensor:
    return x if name is None else ACTIVATIONS[name](x)
