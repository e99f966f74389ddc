"""A corrupt or truncated weight file is one error that names the file, from the loader and from `serve`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from app.api.server import EXIT_STARTUP_FAILED, run_server
from app.checkpoint.errors import CheckpointError
from app.checkpoint.loading import load_model_dir

FILES = ["encoder/model.safetensors", "backbone/model.safetensors", "adapter/projector.safetensors",
         "adapter/lora/adapter_model.safetensors", "backbone/tokenizer.json", "encoder/config.json"]


def truncated_copy(model: Path, out: Path, relative: str) -> Path:
    copy = out / "model"
    shutil.copytree(model, copy)
    target = copy / relative
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    return copy


@pytest.mark.parametrize("relative", FILES)
def test_truncated_file_is_named(tiny_model_dir, tmp_path, relative):
    model = truncated_copy(tiny_model_dir, tmp_path, relative)
    with pytest.raises(CheckpointError) as info:
        load_model_dir(model, device=torch.device("cpu"), dtype=torch.float32)
    assert str(model / relative) in str(info.value)


def test_serve_with_a_truncated_model_exits_with_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    relative = "backbone/model.safetensors"
    model = truncated_copy(tiny_model_dir, tmp_path, relative)
    monkeypatch.setenv("ASR_MODEL", str(model))
    assert run_server({"port": 0}) == EXIT_STARTUP_FAILED
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("diffusion-asr: error:")]
    assert len(lines) == 1 and str(model / relative) in lines[0], err[-2000:]
    assert "Traceback" not in err


def test_busy_port_is_reported_before_the_model_loads(monkeypatch, capsys):
    import socket

    import app.api.server as server

    loads = []
    monkeypatch.setattr(server, "load_engine", lambda *args: loads.append(args))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert run_server({"host": "127.0.0.1", "port": port}) == EXIT_STARTUP_FAILED
    assert loads == []
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err
