"""Metrics: every DESIGN.md §6 name, per-app registries, observer hooks."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from app.api.metrics import Metrics

DESIGN_NAMES = {
    "asr_requests_total", "asr_request_duration_seconds", "asr_queue_wait_seconds", "asr_queue_depth",
    "asr_batch_size", "asr_denoising_steps", "asr_denoising_step_seconds", "asr_encoder_seconds",
    "asr_audio_seconds_total", "asr_realtime_factor", "asr_active_streams", "asr_rejected_total",
    "asr_model_info", "asr_cancelled_jobs_total",
}


def exposed_names(text: str) -> set[str]:
    """Family names and sample names (counters and infos expose a suffixed sample name)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def sample(text: str, name: str, **labels) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name)


def test_every_design_name_is_exposed_before_any_traffic():
    metrics = Metrics()
    metrics.set_model_info(model="m", encoder="e", backbone="b", adapter="a", device="cpu", dtype="float32")
    metrics.observe_request("/v1/models", 200, 0.01)
    text = metrics.render().decode()
    assert DESIGN_NAMES <= exposed_names(text)
    assert sample(text, "asr_model_info", model="m", device="cpu") == 1.0


def test_observer_hooks_update_metrics():
    metrics = Metrics()
    metrics.batch_step(4, 0.02)
    metrics.encoded(4, 0.1)
    metrics.queue_depth(3)
    metrics.job_finished(queue_wait_s=0.5, steps_used=8, audio_s=10.0, compute_s=2.0)
    metrics.job_rejected("cancelled")
    metrics.job_rejected("queue_full")
    text = metrics.render().decode()
    assert sample(text, "asr_batch_size_sum") == 4
    assert sample(text, "asr_queue_depth") == 3
    assert sample(text, "asr_audio_seconds_total") == 10
    assert sample(text, "asr_realtime_factor_sum") == 0.2
    assert sample(text, "asr_cancelled_jobs_total") == 1
    assert sample(text, "asr_rejected_total", reason="queue_full") == 1
    assert sample(text, "asr_rejected_total", reason="deadline") == 0


def test_registries_are_per_instance():
    a, b = Metrics(), Metrics()
    a.queue_depth(5)
    assert sample(b.render().decode(), "asr_queue_depth") == 0
