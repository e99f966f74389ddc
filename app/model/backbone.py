"""Stage 3: DiffusionGemma with LoRA; a prompt's embeddings with the audio scattered in, prefilled into a KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache

from app.model.prompt import Prompt

# Only the language-model attention of encoder and decoder: a bare ["q_proj", ...] list would also hit the
# vision tower's clippable linears, which peft rejects.
LORA_TARGETS = r"model\.(encoder\.language_model|decoder)\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"


def lora_config(rank: int, alpha: int) -> LoraConfig:
    """LoRA on the backbone's encoder and decoder attention projections."""
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none")


def attach_new_lora(model: DiffusionGemmaForBlockDiffusion, config: LoraConfig) -> PeftModel:
    """Wrap `model` with fresh LoRA layers (training, or writing a new checkpoint)."""
    return get_peft_model(model, config)


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """The backbone's final logit soft-capping, as `DiffusionGemmaForBlockDiffusion.forward` applies it."""
    logits = logits.float()
    if cap is None:
        return logits
    return torch.tanh(logits / cap) * cap


@dataclass
class Prefill:
    """The encoder's KV cache for one prompt: per layer `(keys, values)` of shape `[1, heads, L, dim]`."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    length: int  # the prompt's length: canvas slot 0 sits at this rotary position unless `canvas_position` says
    last_hidden: torch.Tensor | None = None  # [H] the encoder's output at the prompt's last position
    # A row start that seeds the canvas (`app.model.ctc_start`) sets these; the stock start leaves them None.
    start: torch.Tensor | None = None  # [C - 1] ids of canvas slots 1.. at the first step
    tag: int | None = None  # id kept in canvas slot 0 (the language tag) at every step
    # The rotary position of canvas slot 0 when the prompt's positions are not its indices
    # (`app.model.aligned_positions`); None: right after the prompt.
    canvas_position: int | None = None

    @property
    def canvas_start(self) -> int:
        """The rotary position of canvas slot 0."""
        return self.length if self.canvas_position is None else self.canvas_position


def prompt_embeddings(
    model: DiffusionGemmaForBlockDiffusion, prompt: Prompt, audio: torch.Tensor
) -> torch.Tensor:
    """Prompt token embeddings `[1, L, H]` with the projected audio `[slots, H]` scattered into its slots."""
    embed = model.model.encoder.get_input_embeddings()
    ids = prompt.ids.to(embed.weight.device)
    embeds = embed(ids[None]).clone()
    embeds[0, prompt.audio_positions.to(ids.device)] = audio.to(embeds.dtype)
    return embeds


@torch.no_grad()
def prefill(model: DiffusionGemmaForBlockDiffusion, embeds: torch.Tensor) -> Prefill:
    """Run the backbone's causal encoder over one prompt's embeddings `[1, L, H]` and keep its KV cache (the canvas
    will sit right after the prompt)."""
    return prefill_batch(model, embeds)[0]


@torch.no_grad()
def prefill_many(model: DiffusionGemmaForBlockDiffusion, embeds: list[torch.Tensor],
                 positions: list[torch.Tensor] | None = None) -> list[Prefill]:
    """Prefill several prompts `[1, L_i, H]`, one encoder pass per prompt length; results in input order.

    `positions` (`[1, L_i]` each) replace the prompts' indices as their rotary positions.

    Prompts of one length run unpadded: a row's cache differs from its solo prefill only where a matrix product
    over more rows rounds differently (on CPU in fp32: none at 40- and 200-token prompts, up to 6e-7 at 12), the
    same float-level batch dependence as the batched denoising step (tests/unit/test_prefill.py). Padding prompts
    to one length would add masked positions to every row and is not done.
    """
    by_length: dict[int, list[int]] = {}
    for index, e in enumerate(embeds):
        by_length.setdefault(e.shape[1], []).append(index)
    out: list[Prefill | None] = [None] * len(embeds)
    for indices in by_length.values():
        stacked = torch.cat([positions[i] for i in indices]) if positions is not None else None
        for index, state in zip(indices, prefill_batch(model, torch.cat([embeds[i] for i in indices]), stacked)):
            out[index] = state
    return out  # type: ignore[return-value]  # every index was filled


@torch.no_grad()
def prefill_batch(model: DiffusionGemmaForBlockDiffusion, embeds: torch.Tensor,
                  positions: torch.Tensor | None = None) -> list[Prefill]:
    """One encoder pass over `[n, L, H]` prompts of the same length; one `Prefill` per row (views of the batch's
    cache). `positions` `[n, L]` are the rotary positions (default: the indices).

    `generate()` reads only `input_ids`, so the encoder is called directly with `inputs_embeds`; the encoder
    discards a 2-D mask's extras, so the precomputed mask dict is passed, as `generate()` itself does.
    """
    rows, length = embeds.shape[:2]
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    if positions is None:
        positions = torch.arange(length, dtype=torch.int32, device=embeds.device)[None].expand(rows, length)
    # An explicit mask and a cache keep transformers from reading repeated positions as packed sequences
    # (`masking_utils.find_packed_sequence_indices` runs only without both): causality follows the indices.
    mask = model.model.encoder.create_masks_for_generate(
        config=model.config,
        inputs_embeds=embeds,
        attention_mask=torch.ones((rows, length), dtype=torch.bool, device=embeds.device),
        cache=cache,
        position_ids=positions,
    )
    out = model.model.encoder(inputs_embeds=embeds, attention_mask=mask, cache=cache, position_ids=positions)
    return [
        Prefill(layers=[(layer.keys[r : r + 1], layer.values[r : r + 1]) for layer in out.cache.layers],
                length=length, last_hidden=out.last_hidden_state[r, -1])
        for r in range(rows)
    ]
