"""The model hub: what loads from which files, and a broken file never takes the worker down."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.hub import BackendUnavailable, ModelHub
from testkit import standins


def test_builtin_only_without_weights(tmp_path: Path) -> None:
    hub = ModelHub(tmp_path, ["analyze", "faceswap"], provider_pref="cpu")
    hub.load()
    assert hub.ready and hub.backends_for("faceswap") == ["builtin"]
    assert hub.resolve("faceswap", "auto") == "builtin"
    with pytest.raises(BackendUnavailable) as e:
        hub.resolve("faceswap", "neural")
    assert e.value.command == "python -m app weights download buffalo_l inswapper_128"


def test_neural_loads_from_standins(tmp_path: Path) -> None:
    standins.make_weights_dir(tmp_path)
    hub = ModelHub(tmp_path, ["analyze", "faceswap"], provider_pref="cpu")
    hub.load()
    assert hub.backends_for("faceswap") == ["neural", "builtin"]
    assert hub.resolve("analyze", "auto") == "neural"
    assert all(s.loaded for s in hub.statuses)
    assert hub.job_status()["faceswap"]["missing_files"] == []


def test_corrupt_weight_file_is_reported_not_fatal(tmp_path: Path) -> None:
    standins.make_weights_dir(tmp_path)
    (tmp_path / "inswapper_128.onnx").write_bytes(b"not an onnx file")
    hub = ModelHub(tmp_path, ["analyze", "faceswap"], provider_pref="cpu")
    hub.load()
    status = {s.name: s for s in hub.statuses}
    assert not status["inswapper_128"].loaded and status["inswapper_128"].error
    assert hub.backends_for("faceswap") == ["builtin"]  # swap falls back; analysis stays neural
    assert hub.backends_for("analyze") == ["neural", "builtin"]


def test_analyze_only_does_not_load_swappers(tmp_path: Path) -> None:
    standins.make_weights_dir(tmp_path)
    hub = ModelHub(tmp_path, ["analyze"], provider_pref="cpu")
    hub.load()
    assert hub.swappers == {} and set(hub.analysers) == {"neural", "builtin"}
