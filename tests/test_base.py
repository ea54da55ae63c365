"""The pieces of the contract that need no model: top_k, device choice, config parsing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from recengine.models.base import EpochEvent, config_from_dict, resolve_device, top_k


def test_top_k_orders_and_breaks_ties_by_index() -> None:
    scores = torch.tensor([0.5, 2.0, 2.0, -1.0, 3.0])
    items, values = top_k(scores, 3)
    assert items.tolist() == [4, 1, 2]
    assert values.tolist() == [3.0, 2.0, 2.0]


def test_top_k_excludes_and_returns_fewer_when_exhausted() -> None:
    scores = torch.tensor([1.0, 2.0, 3.0])
    items, _ = top_k(scores, 10, exclude=torch.tensor([2]))
    assert items.tolist() == [1, 0]
    assert top_k(scores, 0)[0].tolist() == []
    assert scores.tolist() == [1.0, 2.0, 3.0], "the caller's scores are not modified"


def test_resolve_device(monkeypatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("RECENGINE_DEVICE", "cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@dataclass(frozen=True)
class _Config:
    epochs: int = 3
    learning_rate: float = 0.1
    sigmoid: bool = True
    widths: tuple = (8, 4)
    optimizer: str = "adam"


def test_config_from_dict_converts_strings_and_rejects_unknowns() -> None:
    config = config_from_dict(_Config, {"epochs": "5", "learning_rate": "0.01", "sigmoid": "false", "widths": "16,8"})
    assert config == _Config(epochs=5, learning_rate=0.01, sigmoid=False, widths=(16, 8))
    assert config_from_dict(_Config, {"widths": [4, 2]}).widths == (4, 2)
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) \['bogus'\]"):
        config_from_dict(_Config, {"bogus": 1})
    with pytest.raises(ValueError, match="epochs must be int"):
        config_from_dict(_Config, {"epochs": "2.5"})
    with pytest.raises(ValueError, match="sigmoid must be bool"):
        config_from_dict(_Config, {"sigmoid": "maybe"})


def test_epoch_event_to_dict_flattens_metrics() -> None:
    event = EpochEvent(2, 5, 0.8, 1.5, {"rmse": 0.9})
    assert event.to_dict() == {"epoch": 2, "epochs": 5, "loss": 0.8, "seconds": 1.5, "rmse": 0.9}
