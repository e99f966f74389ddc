"""Training losses, target layouts and the fast feature path (no training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.training import losses


def test_build_targets_layout_and_masks() -> None:
    t = losses.build_targets([[10, 11, 12], [20]], tag_ids=[5, 6], eos_id=1, pad_id=0, canvas_length=8)
    assert t.canvas.tolist() == [[5, 10, 11, 12, 1, 0, 0, 0], [6, 20, 1, 0, 0, 0, 0, 0]]
    assert t.content.tolist() == [[True] * 5 + [False] * 3, [True] * 3 + [False] * 5]
    # Causal encoder input: tag + text; labels: what each position (prompt end first) must predict.
    assert t.ar_inputs.tolist() == [[5, 10, 11, 12], [6, 20, 0, 0]]
    assert t.ar_labels.tolist() == [[5, 10, 11, 12, 1], [6, 20, 1, losses.IGNORE, losses.IGNORE]]
    assert t.ar_labels.shape[1] == t.ar_inputs.shape[1] + 1
    assert t.ctc.tolist() == [[10, 11, 12], [20, 0, 0]]
    assert t.ctc_lengths.tolist() == [3, 1]


def test_build_targets_rejects_overlong() -> None:
    try:
        losses.build_targets([[1] * 7], tag_ids=[5], eos_id=1, pad_id=0, canvas_length=8)
    except ValueError:
        return
    raise AssertionError("expected ValueError")


def test_corrupt_fraction_follows_t() -> None:
    g = torch.Generator().manual_seed(0)
    canvas = torch.zeros((2, 2000), dtype=torch.long)
    noisy, chosen, t = losses.corrupt(canvas, vocab_size=1000, generator=g, t=torch.tensor([0.0, 0.5]))
    assert torch.equal(noisy[0], canvas[0]) and not chosen[0].any()
    assert abs(chosen[1].float().mean().item() - 0.5) < 0.05
    assert torch.equal(noisy[~chosen], canvas[~chosen])
    assert noisy.max() < 1000


def test_noise_levels_exponent_shifts_corruption_up() -> None:
    generator = torch.Generator().manual_seed(0)
    uniform = losses.noise_levels(20_000, 1.0, generator)
    noisier = losses.noise_levels(20_000, 0.5, generator)
    for t in (uniform, noisier):
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    # E[u] = 1/2; E[u ** 0.5] = 2/3
    assert float(uniform.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(noisier.mean()) == pytest.approx(2 / 3, abs=0.01)


def test_diffusion_loss_weights_pad_positions() -> None:
    canvas = torch.tensor([[3, 0]])
    content = torch.tensor([[True, False]])
    logits = torch.zeros((1, 2, 4))
    logits[0, 0, 3] = 10.0  # content right, pad uniform
    full = losses.diffusion_loss(logits, canvas, content, pad_weight=1.0)
    light = losses.diffusion_loss(logits, canvas, content, pad_weight=0.0)
    assert light < 1e-3 < full
    assert torch.isfinite(full)


def test_ctc_helpers() -> None:
    assert losses.ctc_required_slots([1, 2, 2, 3]) == 5
    logits = torch.full((1, 6, 5), -5.0)
    for slot, token in enumerate([0, 2, 2, 0, 2, 3]):
        logits[0, slot, token] = 5.0
    assert losses.greedy_ctc(logits, torch.tensor([6])) == [[2, 2, 3]]
    assert losses.greedy_ctc(logits, torch.tensor([3])) == [[2]]
    loss = losses.ctc_loss(logits, torch.tensor([6]), torch.tensor([[2, 2, 3]]), torch.tensor([3]))
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_softcap_bounds_logits() -> None:
    from app.model.backbone import softcap

    x = torch.tensor([-1000.0, 0.0, 1000.0])
    capped = softcap(x, 30.0)
    assert capped.abs().max() <= 30.0 and capped[1] == 0.0


def test_fast_log_mel_equals_serving_features() -> None:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from app.model.encoder import feature_extractor_for, log_mel, window_frames
    from app.training.features import fast_log_mel

    encoder = WhisperEncoder(WhisperConfig(max_source_positions=100, d_model=8, encoder_layers=1,
                                           encoder_attention_heads=1, encoder_ffn_dim=8))
    extractor, frames = feature_extractor_for(encoder), window_frames(encoder)
    rng = np.random.default_rng(0)
    for n in (0, 1, 1000, 16000, frames * 160 - 300, frames * 160, frames * 160 + 5000):
        audio = (rng.standard_normal(n) * 0.1).astype(np.float32)
        expected = log_mel(extractor, [audio], frames)[0]
        assert torch.allclose(fast_log_mel(extractor, audio, frames), expected, atol=1e-5), n


def test_character_tokenizer_gives_one_token_per_character_in_every_script() -> None:
    from app.checkpoint.tokenizer import build_tokenizer

    corpus = ["the cat sat", "über den hund", "le château", "el niño", "नमस्ते दुनिया", "我们是学生"]
    tokenizer = build_tokenizer(corpus * 3, vocab_size=512, characters=True)
    for text in corpus:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert len(ids) == len(text), (text, tokenizer.convert_ids_to_tokens(ids))
        assert tokenizer.decode(ids) == text
    unseen = tokenizer("Zürich 猫", add_special_tokens=False).input_ids  # unseen characters fall back to bytes
    assert tokenizer.decode(unseen) == "Zürich 猫"


def test_word_initial_tokenizer_makes_a_missed_space_a_substitution_not_a_shift() -> None:
    from app.checkpoint.tokenizer import build_tokenizer

    corpus = ["the cat sat", "über den hund", "le château", "el niño", "नमस्ते दुनिया", "我们是学生"]
    tokenizer = build_tokenizer(corpus * 3, vocab_size=512, characters=True, word_initial=True)
    for text in corpus:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert len(ids) == len(text) - text.count(" "), (text, tokenizer.convert_ids_to_tokens(ids))
        assert tokenizer.decode(ids) == text
    spaced = tokenizer("the cat", add_special_tokens=False).input_ids
    run_on = tokenizer("thecat", add_special_tokens=False).input_ids
    assert len(spaced) == len(run_on) == 6
    assert [a != b for a, b in zip(spaced, run_on)] == [False, False, False, True, False, False]
    assert tokenizer.decode(spaced[:3] + run_on[3:]) == "thecat"
