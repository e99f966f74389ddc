"""The denoising loop against transformers' own generate() and its batching guarantees."""

from __future__ import annotations

import pytest
import torch
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    EntropyBoundSampler, EntropyBoundSamplerConfig, StableAndConfidentStoppingCriteria,
)

from app.model.backbone import prefill
from app.model.denoiser import DenoiseBatch, DenoiseJob, SamplingParams, bucket_size, denoise_all
from app.checkpoint.presets import PRESETS, backbone_config
from app.model.sampling import InverseCdfSampler, MultinomialSampler, entropy_bound_mask, token_entropy

IDS = {"pad": 0, "eos": 1, "bos": 2, "image": 5, "boi": 6, "eoi": 7}


@pytest.fixture(scope="module")
def backbone() -> DiffusionGemmaForBlockDiffusion:
    torch.manual_seed(0)
    return DiffusionGemmaForBlockDiffusion(backbone_config(PRESETS["tiny-random"], IDS)).eval()


def _prefill(model, ids):
    return prefill(model, model.model.encoder.get_input_embeddings()(ids))


def _pad_after_eos(tokens: list[int], eos: int = 1, pad: int = 0) -> torch.Tensor:
    out = torch.tensor(tokens)
    hits = (out == eos).nonzero()
    if len(hits):
        out[hits[0, 0] + 1:] = pad
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_loop_reproduces_generate_token_for_token(backbone, seed):
    ids = torch.randint(10, 500, (1, 17), generator=torch.Generator().manual_seed(100 + seed))
    canvas = backbone.config.canvas_length
    torch.manual_seed(seed)
    reference = backbone.generate(ids, max_new_tokens=canvas, max_denoising_steps=8).sequences[0, ids.shape[1]:]
    job = DenoiseJob(_prefill(backbone, ids), steps=8, generator=torch.Generator().manual_seed(seed))
    result = denoise_all(backbone, [job], SamplingParams(), MultinomialSampler())[0]
    assert torch.equal(_pad_after_eos(result.tokens), reference)


def test_generate_parity_holds_when_rows_stop_early(backbone):
    # The temperature falls step by step, so the canvas entropy does too: a confidence threshold between
    # two steps' entropies (stability off) makes both loops stop in the middle of their budget.
    ids = torch.randint(10, 500, (1, 9), generator=torch.Generator().manual_seed(7))
    job = lambda: DenoiseJob(_prefill(backbone, ids), steps=16, generator=torch.Generator().manual_seed(5))  # noqa: E731
    full = denoise_all(backbone, [job()], SamplingParams(confidence_threshold=1e-9), MultinomialSampler())[0]
    entropies = [s.mean_entropy for s in full.steps]
    threshold = (entropies[5] + entropies[6]) / 2
    params = SamplingParams(stability_threshold=0, confidence_threshold=threshold)
    result = denoise_all(backbone, [job()], params, MultinomialSampler())[0]
    torch.manual_seed(5)
    reference = backbone.generate(ids, max_new_tokens=backbone.config.canvas_length, max_denoising_steps=16,
                                  stability_threshold=0, confidence_threshold=threshold).sequences
    assert 1 < result.steps_used < 16
    assert torch.equal(_pad_after_eos(result.tokens), reference[0, ids.shape[1]:])


def test_acceptance_and_entropy_match_the_stock_pieces():
    logits = torch.randn(3, 64, 512) * 4
    probs = logits.softmax(-1)
    entropy = token_entropy(logits, probs)
    stock_entropy = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(entropy, stock_entropy, atol=1e-4)  # fp32: the two formulas round differently
    sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=2.0), 64, 512, 8)
    current, proposal = torch.zeros(3, 64, dtype=torch.long), torch.ones(3, 64, dtype=torch.long)
    stock = sampler.accept_canvas(current, proposal, logits, 8) == 1
    assert torch.equal(entropy_bound_mask(entropy, 2.0), stock)
    stopping = StableAndConfidentStoppingCriteria(stability_threshold=0, confidence_threshold=3.0)
    assert torch.equal(stopping(logits.argmax(-1), logits), entropy.mean(-1) < 3.0)


def test_inverse_cdf_sampler_draws_from_the_distribution():
    probs = torch.tensor([0.1, 0.6, 0.3]).expand(1, 20000, 3).contiguous()
    draws = InverseCdfSampler().sample(probs, [torch.Generator().manual_seed(0)])
    freq = torch.bincount(draws.flatten(), minlength=3).float() / draws.numel()
    assert torch.allclose(freq, torch.tensor([0.1, 0.6, 0.3]), atol=0.015)


def test_rows_stopping_at_different_steps_match_their_solo_runs(backbone):
    jobs = []
    for row in range(8):
        ids = torch.randint(10, 500, (1, 12 + 3 * row), generator=torch.Generator().manual_seed(row))
        jobs.append((_prefill(backbone, ids), row + 1, 1000 + row))
    make = lambda p, steps, seed: DenoiseJob(p, steps, torch.Generator().manual_seed(seed))  # noqa: E731
    together = denoise_all(backbone, [make(*j) for j in jobs], SamplingParams())
    assert sorted(r.steps_used for r in together) == list(range(1, 9))
    for job, batched in zip(jobs, together):
        solo = denoise_all(backbone, [make(*job)], SamplingParams())[0]
        assert batched.tokens == solo.tokens
        assert [s.accepted for s in batched.steps] == [s.accepted for s in solo.steps]
        assert batched.batch_size == 8 and solo.batch_size == 1


def test_a_row_joining_mid_batch_matches_its_solo_run(backbone):
    ids = [torch.randint(10, 500, (1, n), generator=torch.Generator().manual_seed(n)) for n in (10, 25)]
    jobs = [lambda i=i: DenoiseJob(_prefill(backbone, ids[i]), 6, torch.Generator().manual_seed(i)) for i in (0, 1)]
    batch = DenoiseBatch(backbone, SamplingParams())
    batch.add("first", jobs[0]())
    finished = dict(batch.step() + batch.step() + batch.step())
    batch.add("late", jobs[1]())  # joins with no self-conditioning yet while "first" is on step 4
    while len(batch):
        finished.update(batch.step())
    for key, make in (("first", jobs[0]), ("late", jobs[1])):
        assert finished[key].tokens == denoise_all(backbone, [make()], SamplingParams())[0].tokens


def test_step_records(backbone):
    ids = torch.randint(10, 500, (1, 15), generator=torch.Generator().manual_seed(0))
    result = denoise_all(backbone, [DenoiseJob(_prefill(backbone, ids), 5, torch.Generator().manual_seed(0))],
                         SamplingParams())[0]
    assert [s.step for s in result.steps] == [1, 2, 3, 4, 5]
    assert all(s.ms > 0 and s.accepted >= 1 and s.mean_entropy > 0 for s in result.steps)
    assert sum(s.ms for s in result.steps) <= result.denoise_ms
    assert len(result.tokens) == backbone.config.canvas_length


def test_final_logprobs_are_the_models_own_distribution_not_the_samplers_temperature(backbone):
    # One step: the forward pass sees the same random canvas whatever the schedule, and the temperature keeps
    # the argmax, so the model's log-probabilities must not depend on t_min / t_max.
    ids = torch.randint(10, 500, (1, 11), generator=torch.Generator().manual_seed(3))
    results = []
    for t_min, t_max in ((0.1, 0.3), (0.9, 1.5)):
        job = DenoiseJob(_prefill(backbone, ids), steps=1, generator=torch.Generator().manual_seed(4))
        results.append(denoise_all(backbone, [job], SamplingParams(t_min=t_min, t_max=t_max))[0])
    cold, warm = results
    assert cold.tokens == warm.tokens and len(cold.logprobs) == backbone.config.canvas_length
    assert cold.logprobs == pytest.approx(warm.logprobs, abs=1e-4)
    assert all(lp <= 0.0 for lp in cold.logprobs) and min(cold.logprobs) < -0.01

def test_bucketed_batches_run_the_forward_at_bucket_sizes_and_give_the_same_tokens(backbone):
    ids = [torch.randint(10, 500, (1, 9 + 4 * i), generator=torch.Generator().manual_seed(50 + i)) for i in range(3)]
    make = lambda i: DenoiseJob(_prefill(backbone, ids[i]), 2 + i, torch.Generator().manual_seed(i))  # noqa: E731
    seen: list[int] = []
    hook = backbone.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["decoder_input_ids"].shape[0]), with_kwargs=True)
    try:
        bucketed = DenoiseBatch(backbone, SamplingParams(confidence_threshold=0.0), buckets=(4, 2))
        results = {}
        for i in range(3):
            bucketed.add(i, make(i))
        while len(bucketed):
            results.update(bucketed.step())
    finally:
        hook.remove()
    # 3 rows run as 4 until the first leaves after 2 steps, then 2 rows as 2, then the last row also as 2.
    assert seen == [4, 4, 2, 2]
    plain = denoise_all(backbone, [make(i) for i in range(3)], SamplingParams(confidence_threshold=0.0))
    assert [results[i].tokens for i in range(3)] == [r.tokens for r in plain]
    assert [[s.accepted for s in results[i].steps] for i in range(3)] == [[s.accepted for s in r.steps] for r in plain]


def test_a_batch_past_the_largest_bucket_runs_at_its_own_size():
    assert [bucket_size(n, (1, 2, 4, 8)) for n in (1, 3, 8, 9, 20)] == [1, 4, 8, 9, 20]
    assert bucket_size(5, ()) == 5
