"""The fused vocabulary-sized pass gives bit for bit what the separate full-size operations give."""

from __future__ import annotations

import pytest
import torch
from transformers import DiffusionGemmaForBlockDiffusion

from app.checkpoint.presets import PRESETS, backbone_config
from app.model.backbone import prefill
from app.model.denoiser import DenoiseJob, SamplingParams, denoise_all
from app.model.sampling import InverseCdfSampler
from app.model.vocab_pass import _chunks, fused_vocab_pass, separate_vocab_pass, step_temperature

IDS = {"pad": 0, "eos": 1, "bos": 2, "image": 5, "boi": 6, "eoi": 7}


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("slots", [2, 3, 7, 64, 1000])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_fused_pass_matches_the_separate_operations(slots, out_dtype):
    logits = torch.randn(3, 21, 997, generator=torch.Generator().manual_seed(slots)) * 4
    budgets = torch.tensor([8, 5, 1])[:, None, None]
    remaining = torch.tensor([8, 2, 1])[:, None, None]
    sampler = InverseCdfSampler()
    reference = separate_vocab_pass(logits.clone(), budgets, remaining, 0.4, 0.8, sampler, _generators([1, 2, 3]),
                                    out_dtype)
    temperature = step_temperature(0.4, 0.8, budgets, remaining)
    fused = fused_vocab_pass(logits.clone(), temperature, sampler, _generators([1, 2, 3]), out_dtype, slots)
    for name in ("proposal", "argmax", "entropy", "self_cond"):
        assert torch.equal(getattr(fused, name), getattr(reference, name)), name
    assert fused.self_cond.dtype == out_dtype
    # The draws are not degenerate: the tempered distributions are wide enough for draws to differ from argmax.
    assert not torch.equal(fused.proposal, fused.argmax)


def test_fused_pass_leaves_each_generator_where_the_separate_pass_does():
    logits = torch.randn(2, 9, 50, generator=torch.Generator().manual_seed(0))
    budgets, remaining = torch.tensor([4, 4])[:, None, None], torch.tensor([3, 1])[:, None, None]
    separate, fused = _generators([5, 6]), _generators([5, 6])
    separate_vocab_pass(logits.clone(), budgets, remaining, 0.4, 0.8, InverseCdfSampler(), separate, torch.float32)
    fused_vocab_pass(logits.clone(), step_temperature(0.4, 0.8, budgets, remaining), InverseCdfSampler(), fused,
                     torch.float32, 2)
    for a, b in zip(separate, fused):
        assert torch.equal(a.get_state(), b.get_state())


@pytest.mark.parametrize("total, slots", [(1, 4), (2, 4), (9, 4), (8, 4), (13, 4), (5, 2)])
def test_chunks_cover_every_slot_once_and_none_is_a_single_slot(total, slots):
    chunks = _chunks(total, slots)
    covered = [i for start, end in chunks for i in range(start, end)]
    assert covered == list(range(total))
    assert all(end - start >= 2 for start, end in chunks) or total == 1
    assert all(end - start <= slots + 1 for start, end in chunks)


class _WholeRowSampler:
    """The inverse-CDF draw behind another type, so the denoiser takes its separate (unfused) path."""

    def sample(self, probs, generators):
        return InverseCdfSampler().sample(probs, generators)


def test_denoising_through_the_fused_pass_gives_the_separate_pass_tokens():
    torch.manual_seed(0)
    model = DiffusionGemmaForBlockDiffusion(backbone_config(PRESETS["tiny-random"], IDS)).eval()
    embed = model.model.encoder.get_input_embeddings()
    prompts = [torch.randint(10, 500, (1, n), generator=torch.Generator().manual_seed(n)) for n in (11, 19)]

    def jobs():
        return [DenoiseJob(prefill(model, embed(ids)), 4 + i, torch.Generator().manual_seed(i))
                for i, ids in enumerate(prompts)]

    fused = denoise_all(model, jobs(), SamplingParams(), InverseCdfSampler())
    separate = denoise_all(model, jobs(), SamplingParams(), _WholeRowSampler())
    for a, b in zip(fused, separate):
        assert a.tokens == b.tokens
        assert [(s.accepted, s.mean_entropy) for s in a.steps] == [(s.accepted, s.mean_entropy) for s in b.steps]
