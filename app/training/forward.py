"""One training batch through the inference path, with the three losses (DESIGN.md §1).

The forward pass mirrors inference exactly (`app.model.pipeline`): Whisper log-mel of the clip padded to the full
window, the Whisper encoder, the projector, the prompt `PromptBuilder` renders (with the language hint in a
fraction of batches), the projected audio scattered into the `<audio>` slots, the backbone's causal encoder over
the prompt (its KV cache), and the decoder over a canvas right after the prompt.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.profiler import record_function
from transformers import DynamicCache

from app.checkpoint.parts import ModelParts, asr_config_for
from app.checkpoint.presets import ModelDims
from app.model.aligned_positions.positions import aligned_positions, canvas_start, emission_counts
from app.model.backbone import softcap
from app.model.ctc_start.compression import ctc_canvas, prompt_audio
from app.model.prompt import Prompt, PromptBuilder
from app.training import losses
from app.training.aligned_counts import forced_counts
from app.training.batches import Batch
from app.training.config import TrainConfig


def whisper_prefix(encoder, features: torch.Tensor, positions: int) -> torch.Tensor:
    """The Whisper encoder over the first `positions` of its window: `[B, positions, width]`.

    The same computation as `WhisperEncoder.forward` (convolutions, sinusoidal positions, layers, final norm),
    which insists on the full window; over the full window the two are equal (tested). Dropout and LayerDrop
    are left out: the shipped configs set both to 0.
    """
    x = F.gelu(encoder.conv1(features[..., : 2 * positions]))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[:positions]
    for layer in encoder.layers:
        x = layer(x, None)
    return encoder.layer_norm(x)


class AsrTrainer:
    """Holds the model parts and computes the losses of one batch exactly along the inference path."""

    def __init__(self, parts: ModelParts, dims: ModelDims, config: TrainConfig) -> None:
        self.parts = parts
        self.dims = dims
        self.config = config
        self.model = parts.backbone.get_base_model()  # DiffusionGemmaForBlockDiffusion with LoRA layers injected
        # None when training reads the frozen pretrained encoder's cached outputs (`app.training.encoder_cache`).
        self.encoder = parts.whisper.get_encoder() if parts.whisper is not None else None
        self.ctc_start = config.ctc_start()
        # Forced counts hold past each clip's audio (`forced_counts`), so the checkpoint's counts must too.
        self.asr_config = asr_config_for(dims, self.ctc_start, config.aligned_positions,
                                         "hold" if config.aligned_counts == "forced" else "count")
        self.prompts = PromptBuilder(parts.tokenizer, self.asr_config)
        self.self_cond_range = self._self_cond_range()
        self.vocab_size = self.model.config.text_config.vocab_size
        self.cap = self.model.final_logit_softcapping
        for p in self.parameters():
            p.requires_grad_(True)

    @property
    def device(self) -> torch.device:
        """Where the model lives; batches and the tensors built here follow it."""
        return self.model.lm_head.weight.device

    def modules(self) -> list[torch.nn.Module]:
        held = [self.parts.whisper, self.parts.projector, self.parts.backbone]
        return [module for module in held if module is not None]

    def parameters(self) -> list[torch.nn.Parameter]:
        seen, out = set(), []
        for module in self.modules():
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def train(self, mode: bool = True) -> None:
        for module in self.modules():
            module.train(mode)

    def prompt(self, batch_size: int, language: list[str] | None) -> tuple[torch.Tensor, Prompt]:
        """Prompt ids `[B, L]` and the first row's layout (hinted prompts all have the same length)."""
        built = [self.prompts.build(lang) for lang in (language or [None] * batch_size)]
        return torch.stack([b.ids for b in built]).to(self.device), built[0]

    def audio_parameters(self) -> list[torch.nn.Parameter]:
        """The Whisper encoder's and the projector's parameters (the audio path)."""
        whisper = list(self.parts.whisper.parameters()) if self.parts.whisper is not None else []
        return [*whisper, *self.parts.projector.parameters()]

    def train_only_adapter(self) -> None:
        """Let only the projector and the LoRA weights learn (`TrainConfig.train_only` "adapter")."""
        for p in self.parameters():
            p.requires_grad_(False)
        for name, p in self.parts.backbone.named_parameters():
            p.requires_grad_("lora_" in name)  # peft names every adapter weight lora_A / lora_B
        self.parts.projector.requires_grad_(True)

    def freeze_audio(self) -> None:
        """Stop training the audio path (`TrainConfig.freeze_audio`); the optimizer skips grad-less parameters."""
        for p in self.audio_parameters():
            p.requires_grad_(False)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Whisper encoder + projector: `[B, audio_slots, hidden]` (without a graph when the path is frozen).

        Without an encoder of its own, `features` are the cached encoder outputs `[B, positions, width]`.
        """
        frozen = not any(p.requires_grad for p in self.parts.projector.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            if self.encoder is None:
                return self.parts.projector(features.float())
            hidden = self.encoder(features).last_hidden_state
            return self.parts.projector(hidden)

    def prefill(self, audio: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor,
                rotary: torch.Tensor | None = None):
        """Backbone causal encoder over the prompt with the audio scattered in (with gradients); `rotary` `[B, L]`
        are the prompt's rotary positions (default: its indices)."""
        embed = self.model.model.encoder.get_input_embeddings()
        embeds = embed(ids)
        slot_mask = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
        slot_mask[:, positions] = True
        embeds = embeds.masked_scatter(slot_mask[..., None], audio.to(embeds.dtype))
        batch, length = ids.shape
        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        if rotary is None:
            pos = torch.arange(length, dtype=torch.int32, device=ids.device)[None].expand(batch, -1)
        else:
            pos = rotary.to(torch.int32)
        mask = self.model.model.encoder.create_masks_for_generate(
            config=self.model.config, inputs_embeds=embeds,
            attention_mask=torch.ones((batch, length), dtype=torch.bool, device=ids.device), cache=cache,
            position_ids=pos,
        )
        out = self.model.model.encoder(inputs_embeds=embeds, attention_mask=mask, cache=cache, position_ids=pos)
        return cache, out.last_hidden_state

    def _self_cond_range(self) -> tuple[float, float]:
        """The (low, high) temperatures `TrainConfig.self_cond_temperatures` names, checked once at start."""
        choice = self.config.self_cond_temperatures
        if choice == "sampler":
            return self.config.sampler["t_min"], self.config.sampler["t_max"]
        if choice == "stock":
            return self.asr_config.t_min, self.asr_config.t_max
        raise ValueError(f"self_cond_temperatures must be 'stock' or 'sampler', got {choice!r}")

    def self_cond_temperature(self, rows: int, generator: torch.Generator) -> torch.Tensor:
        """`[rows, 1, 1]` temperatures for the self-conditioning logits, uniform over the configured range.

        Inference feeds the previous step's logits divided by that step's temperature, which walks the
        sampler's range from t_max down to t_min (`app.model.vocab_pass.step_temperature`).
        """
        low, high = self.self_cond_range
        return low + (high - low) * torch.rand(rows, 1, 1, generator=generator)

    def ctc_only(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Stage "ctc": the CTC loss alone (encoder, projector and the tied lm_head); the backbone is not run.

        Without the backbone nothing needs the whole window, so the encoder runs only over the positions that
        hold the batch's longest clip (batches are bucketed by length): synthetic clips fill half the window on
        average, so this stage's steps cost about half.
        """
        positions = min(self.dims.encoder_positions, int(batch.slots.max()) * self.dims.subsample)
        if self.encoder is None:  # cached encoder outputs: the positions holding the clips
            hidden = batch.features[:, :positions].float()
        else:
            hidden = whisper_prefix(self.encoder, batch.features, positions)
        audio = self.parts.projector(hidden)
        logits = softcap(self.model.lm_head(audio), self.cap)
        l_ctc = losses.ctc_loss(logits, batch.slots, batch.targets.ctc, batch.targets.ctc_lengths,
                                blank=self.parts.tokenizer.pad_token_id)
        nan = torch.tensor(float("nan"))
        return {"loss": l_ctc, "diff": nan, "ar": nan, "ctc": l_ctc}

    def seeded_rows(self, noisy: torch.Tensor, in_prompt: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`noisy` with `seed_prob` of its rows replaced by the canvas decoding starts from under
        `canvas_init` "ctc" (a random tag slot, then the greedy-CTC transcript), lightly corrupted.

        The seed carries CTC's real errors, shifts included, which uniform corruption of the clean canvas
        never shows the decoder; the target stays the clean canvas.
        """
        cfg, tokenizer = self.config, self.parts.tokenizer
        bsz, canvas_len = noisy.shape
        rows = torch.rand(bsz, generator=generator) < cfg.seed_prob
        t = losses.noise_levels(bsz, cfg.seed_noise_exponent, generator)
        tag = torch.randint(0, self.vocab_size, (bsz, 1), generator=generator)
        seed = ctc_canvas(in_prompt.detach(), self.model.lm_head, canvas_len, tokenizer.pad_token_id,
                          tokenizer.eos_token_id)
        seeded, _, _ = losses.corrupt(torch.cat([tag.to(seed.device), seed], dim=1), self.vocab_size, generator, t)
        return torch.where(rows.to(noisy.device)[:, None], seeded, noisy)

    def losses(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.config
        targets = batch.targets
        bsz = batch.features.shape[0]
        with record_function("train.project"):
            audio = self.project(batch.features)
        ids, layout = self.prompt(bsz, batch.langs if batch.hinted else None)
        in_prompt = audio
        if self.ctc_start is not None:  # the add-on's prompt audio, exactly as `CtcStart` feeds it
            in_prompt = prompt_audio(audio, self.model.lm_head, self.parts.tokenizer.pad_token_id)
        with record_function("train.ctc"):
            ctc_logits = softcap(self.model.lm_head(audio), self.cap)
        with record_function("train.positions"):
            rotary, canvas_at = self.rotary_positions(ctc_logits, ids.shape[1], int(layout.audio_positions[0]),
                                                      batch, generator)
        with record_function("train.prefill"):
            cache, prompt_hidden = self.prefill(in_prompt, ids, layout.audio_positions, rotary)
        l_diff, l_ar = self.canvas_losses(cache, prompt_hidden, targets, canvas_at, ids.shape[1], generator,
                                          in_prompt)
        with record_function("train.ctc"):
            l_ctc = losses.ctc_loss(ctc_logits, batch.slots, targets.ctc, targets.ctc_lengths,
                                    blank=self.parts.tokenizer.pad_token_id)
        total = cfg.w_diffusion * l_diff + cfg.w_ar * l_ar + cfg.w_ctc * l_ctc
        return {"loss": total, "diff": l_diff, "ar": l_ar, "ctc": l_ctc}

    def canvas_losses(self, cache: DynamicCache, prompt_hidden: torch.Tensor, targets: losses.Targets,
                      canvas_at: int, length: int, generator: torch.Generator,
                      in_prompt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The diffusion and autoregressive losses of the canvas after a prefilled prompt of `length` tokens.

        `canvas_at` is canvas slot 0's rotary position; `in_prompt` is the audio the prompt carries (for the
        CTC-seeded rows of `seed_prob`; None for a prompt without audio).
        """
        cfg = self.config
        bsz = prompt_hidden.shape[0]
        canvas_len = targets.canvas.shape[1]
        device = self.device
        dec_pos = (canvas_at + torch.arange(canvas_len, device=device))[None].expand(bsz, -1)

        # (1) uniform diffusion, self-conditioned as inference does: a first pass's logits (later steps) on a
        # fraction of the rows. Random draws come from the CPU generator (the same stream on any device), then move.
        t = losses.noise_levels(bsz, cfg.noise_exponent, generator)
        noisy, _, _ = losses.corrupt(targets.canvas, self.vocab_size, generator, t)
        # At seed_prob 0 (the recipe) no seed is built or drawn for: training is that of a "noise" start.
        if (in_prompt is not None and self.ctc_start is not None and self.ctc_start["canvas"] == "ctc"
                and cfg.seed_prob > 0):
            noisy = self.seeded_rows(noisy, in_prompt, generator)
        sc_mask = (torch.rand(bsz, generator=generator) < cfg.self_cond_prob).to(device)
        sc_logits = None
        if bool(sc_mask.any()):
            with torch.no_grad(), record_function("train.self_cond_pass"):
                first = self.model(decoder_input_ids=noisy, cache=cache, decoder_position_ids=dec_pos).logits
            sc_logits = first / self.self_cond_temperature(bsz, generator).to(device)
        with record_function("train.decoder_pass"):
            logits = self.model(
                decoder_input_ids=noisy, cache=cache, decoder_position_ids=dec_pos,
                self_conditioning_logits=sc_logits, self_conditioning_mask=sc_mask if sc_logits is not None else None,
            ).logits
            l_diff = losses.diffusion_loss(logits, targets.canvas, targets.content, cfg.pad_weight)
        with record_function("train.ar_pass"):
            l_ar = self.ar_loss(cache, prompt_hidden, targets, canvas_at, length)
        return l_diff, l_ar

    def rotary_positions(self, ctc_logits: torch.Tensor, length: int, audio_start: int,
                         batch: Batch | None = None,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, int]:
        """The prompt's rotary positions `[B, L]` (None: its indices) and canvas slot 0's position, as the
        checkpoint's row start will give them (`AlignedStart` with `aligned_positions`), counted along the path
        `aligned_counts` names ("forced" follows `batch`'s transcripts; `greedy_count_share` of its rows, drawn
        from `generator`, keep the greedy path)."""
        cfg = self.config
        if not cfg.aligned_positions:
            return None, length
        blank = self.parts.tokenizer.pad_token_id
        if cfg.aligned_counts == "forced":
            if batch is None:
                raise ValueError("forced counts follow a batch's transcripts: pass the batch")
            greedy_rows = None
            if cfg.greedy_count_share > 0.0:
                if generator is None:
                    raise ValueError("greedy_count_share draws its rows: pass the generator")
                greedy_rows = torch.rand(ctc_logits.shape[0], generator=generator) < cfg.greedy_count_share
            counts = forced_counts(ctc_logits, batch.slots, batch.targets.ctc, batch.targets.ctc_lengths, blank,
                                   greedy_rows)
        else:
            counts = emission_counts(ctc_logits.detach(), blank)
        return aligned_positions(counts, audio_start, length), canvas_start(audio_start)

    def ar_loss(self, cache: DynamicCache, prompt_hidden: torch.Tensor, targets: losses.Targets,
                canvas_at: int, length: int) -> torch.Tensor:
        """The autoregressive auxiliary loss; after the decoder pass, since it appends the target to the cache.

        The target's tokens sit at the canvas's rotary positions (from `canvas_at`); `length` is the prompt's."""
        device, bsz = self.device, prompt_hidden.shape[0]
        embed = self.model.model.encoder.get_input_embeddings()
        ar_embeds = embed(targets.ar_inputs)
        steps = ar_embeds.shape[1]
        ar_pos = (canvas_at + torch.arange(steps, dtype=torch.int32, device=device))[None].expand(bsz, -1)
        mask = self.model.model.encoder.create_masks_for_generate(
            config=self.model.config, inputs_embeds=ar_embeds,
            attention_mask=torch.ones((bsz, length + steps), dtype=torch.bool, device=device), cache=cache,
            position_ids=ar_pos,
        )
        ar_out = self.model.model.encoder(inputs_embeds=ar_embeds, attention_mask=mask, cache=cache,
                                          position_ids=ar_pos)
        hidden = torch.cat([prompt_hidden[:, -1:], ar_out.last_hidden_state], dim=1)
        return losses.ar_loss(softcap(self.model.lm_head(hidden), self.cap), targets.ar_labels)
