"""Stage 3: DiffusionGemma with LoRA; the prompt with audio slots and its prefill into a KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache, PreTrainedTokenizerBase

from app.model.asr_config import AsrConfig

# Only the language-model attention of encoder and decoder: a bare ["q_proj", ...] list would also hit the
# vision tower's clippable linears, which peft rejects.
LORA_TARGETS = r"model\.(encoder\.language_model|decoder)\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"


def lora_config(rank: int, alpha: int) -> LoraConfig:
    """LoRA on the backbone's encoder and decoder attention projections."""
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none")


def attach_new_lora(model: DiffusionGemmaForBlockDiffusion, config: LoraConfig) -> PeftModel:
    """Wrap `model` with fresh LoRA layers (training, or writing a new checkpoint)."""
    return get_peft_model(model, config)


def load_lora(model: DiffusionGemmaForBlockDiffusion, path: str) -> DiffusionGemmaForBlockDiffusion:
    """Inject a saved LoRA adapter into `model` in place and return the (now LoRA-carrying) model.

    The adapter is deliberately not merged: encoder and decoder layers share (tie) their base weights, so
    merging the encoder's LoRA would also change the decoder's weights.
    """
    peft_model = PeftModel.from_pretrained(model, path, is_trainable=False, local_files_only=True)
    peft_model.eval()
    return peft_model.base_model.model


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """The backbone's final logit soft-capping, as `DiffusionGemmaForBlockDiffusion.forward` applies it."""
    logits = logits.float()
    if cap is None:
        return logits
    return torch.tanh(logits / cap) * cap


@dataclass(frozen=True)
class Prompt:
    """Token ids of one prompt and where its audio slots are."""

    ids: torch.Tensor  # [L] long
    audio_positions: torch.Tensor  # [audio_slots] long
    canvas_start: int  # rotary position of canvas slot 0 (`AsrConfig.canvas_positions`)


class PromptBuilder:
    """Renders the adapter's prompt template to ids with `audio_slots` placeholder tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: AsrConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.audio_id = tokenizer.convert_tokens_to_ids(config.audio_token)
        if self.audio_id is None or self.audio_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no single token for the audio placeholder {config.audio_token!r}")

    def hint(self, language: str | None, prompt: str | None) -> str:
        """The optional language and context text appended to the instruction."""
        text = ""
        if language:
            text += self.config.language_hint.format(language=language)
        if prompt:
            text += self.config.context_hint.format(prompt=prompt)
        return text

    def build(self, language: str | None = None, prompt: str | None = None) -> Prompt:
        """Token ids for one request; the template's text is tokenized around the audio placeholder."""
        before, after = self.config.prompt_template.split("{audio}")
        encode = lambda text: self.tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
        head = encode(before.format(hint=self.hint(language, prompt)))
        tail = encode(after.format(hint=self.hint(language, prompt)))
        ids = torch.tensor(head + [self.audio_id] * self.config.audio_slots + tail, dtype=torch.long)
        positions = torch.arange(len(head), len(head) + self.config.audio_slots)
        start = len(head) - 1 if self.config.canvas_positions == "on_audio" else len(ids)
        return Prompt(ids=ids, audio_positions=positions, canvas_start=start)


@dataclass
class Prefill:
    """The encoder's KV cache for one prompt: per layer `(keys, values)` of shape `[1, heads, L, dim]`."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    length: int
    canvas_start: int  # rotary position of canvas slot 0
    prior: torch.Tensor | None = None  # [C, V] self-conditioning logits for the first step (`canvas_prior`)
    start: torch.Tensor | None = None  # [C - 1] ids of canvas slots 1.. at the first step (`canvas_init`)
    tag: int | None = None  # id kept in canvas slot 0 (the language tag) at every step (`canvas_init`)
    last_hidden: torch.Tensor | None = None  # [H] the encoder's output at the prompt's last position


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
def prefill(
    model: DiffusionGemmaForBlockDiffusion, embeds: torch.Tensor, canvas_start: int | None = None
) -> Prefill:
    """Run the backbone's causal encoder over one prompt's embeddings and keep its KV cache.

    The canvas will sit at `canvas_start` onwards (by default right after the prompt).

    `generate()` reads only `input_ids`, so the encoder is called directly with `inputs_embeds`; the encoder
    discards a 2-D mask's extras, so the precomputed mask dict is passed, as `generate()` itself does.
    """
    length = embeds.shape[1]
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    positions = torch.arange(length, dtype=torch.int32, device=embeds.device)[None]
    mask = model.model.encoder.create_masks_for_generate(
        config=model.config,
        inputs_embeds=embeds,
        attention_mask=torch.ones((1, length), dtype=torch.bool, device=embeds.device),
        cache=cache,
        position_ids=positions,
    )
    out = model.model.encoder(inputs_embeds=embeds, attention_mask=mask, cache=cache, position_ids=positions)
    layers = [(layer.keys, layer.values) for layer in out.cache.layers]
    return Prefill(layers=layers, length=length, canvas_start=length if canvas_start is None else canvas_start,
                   last_hidden=out.last_hidden_state[0, -1])


@torch.no_grad()
def next_tokens_among(model: DiffusionGemmaForBlockDiffusion, state: Prefill,
                      allowed: list[int]) -> list[tuple[int, float]]:
    """`allowed` with the autoregressive head's probability for each as the token after the prompt (renormalised
    over `allowed`), most likely first.

    Training's autoregressive loss reads the tag from exactly this position (the lm_head over the prompt's last
    hidden state, soft-capped as in training).
    """
    logits = softcap(model.lm_head(state.last_hidden), model.final_logit_softcapping)
    probs = logits[allowed].softmax(dim=-1)  # `softcap` returns fp32
    return [(allowed[int(i)], float(probs[i])) for i in probs.argsort(descending=True)]
