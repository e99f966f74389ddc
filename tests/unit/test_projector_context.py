"""Transformer layers over the projector's slots: what they change, how they are saved, and how a run adds them to
a trained projector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.checkpoint.errors import CheckpointError
from app.checkpoint.layout import PROJECTOR_FILE, PROJECTOR_META_FILE
from app.checkpoint.projector_files import is_own_projector, own_projector_json
from app.checkpoint.reading import load_projector
from app.model.projector import Projector, SlotContext, with_context

ENCODER_WIDTH, WIDTH, HIDDEN, SUBSAMPLE = 12, 16, 8, 2


def _projector(layers: int, seed: int = 0) -> Projector:
    torch.manual_seed(seed)
    return Projector(ENCODER_WIDTH, WIDTH, HIDDEN, SUBSAMPLE, SlotContext(layers, heads=2, ffn=24)).eval()


def _frames(seed: int = 1, positions: int = 20) -> torch.Tensor:
    return torch.randn(2, positions, ENCODER_WIDTH, generator=torch.Generator().manual_seed(seed))


def _save(adapter: Path, projector: Projector) -> Path:
    adapter.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in projector.state_dict().items()}, str(adapter / PROJECTOR_FILE))
    (adapter / PROJECTOR_META_FILE).write_text(json.dumps(own_projector_json(projector)))
    return adapter


@pytest.mark.parametrize(("layers", "reaches_far"), [(0, False), (2, True)])
def test_only_context_layers_let_a_slot_see_audio_outside_its_own_frames(layers: int, reaches_far: bool) -> None:
    projector, frames = _projector(layers), _frames()
    changed = frames.clone()
    changed[:, -4:] += 1.0  # the last two slots' frames only
    with torch.no_grad():
        first, first_changed = projector(frames)[:, 0], projector(changed)[:, 0]
    assert (not torch.allclose(first, first_changed, atol=1e-6)) is reaches_far


def test_real_slots_keep_the_padded_tail_out_of_the_real_slots() -> None:
    projector, frames = _projector(2), _frames()
    longer = torch.cat([frames, _frames(seed=7, positions=8)], dim=1)
    real = torch.tensor([10, 10])  # the 20 positions of `frames`
    with torch.no_grad():
        alone = projector(frames)
        padded = projector(longer, real)[:, :10]
        unmasked = projector(longer)[:, :10]
    torch.testing.assert_close(padded, alone)
    assert not torch.allclose(unmasked, alone, atol=1e-6)


def test_a_saved_projector_with_context_loads_back_the_same(tmp_path: Path) -> None:
    projector = _projector(2)
    adapter = _save(tmp_path / "adapter", projector)
    spec = json.loads((adapter / PROJECTOR_META_FILE).read_text())
    assert spec == {"subsample": SUBSAMPLE, "context_layers": 2, "context_heads": 2}
    loaded = load_projector(adapter, torch.device("cpu"), torch.float32)
    assert loaded.context_spec.layers == 2 and loaded.context_spec.ffn == 24
    with torch.no_grad():
        torch.testing.assert_close(loaded(_frames()), projector(_frames()))
    assert is_own_projector(set(projector.state_dict())) and not is_own_projector({"conv.weight", "out.weight"})


def test_a_description_that_does_not_match_the_tensors_is_refused_by_name(tmp_path: Path) -> None:
    adapter = _save(tmp_path / "adapter", _projector(1))
    (adapter / PROJECTOR_META_FILE).write_text(json.dumps({"subsample": SUBSAMPLE, "context_layers": 2,
                                                           "context_heads": 2}))
    with pytest.raises(CheckpointError, match="projector.json.*context_layers"):
        load_projector(adapter, torch.device("cpu"), torch.float32)


def test_added_context_layers_start_silent_then_learn() -> None:
    plain = _projector(0)
    grown = with_context(plain, SlotContext(2, heads=2, ffn=24)).eval()
    frames = _frames()
    with torch.no_grad():
        torch.testing.assert_close(grown(frames), plain(frames))
    # Silent, not dead: one step moves the layers' output projections, and then the output.
    optimizer = torch.optim.SGD(grown.parameters(), lr=0.1)
    grown(frames).pow(2).mean().backward()
    optimizer.step()
    assert grown.context[0].linear2.weight.abs().sum() > 0
    with torch.no_grad():
        assert not torch.allclose(grown(frames), plain(frames), atol=1e-6)
    with pytest.raises(ValueError, match="without context layers"):
        with_context(_projector(1), SlotContext(2, heads=2, ffn=24))
