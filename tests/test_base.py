"""The pieces of the contract that need no model: top_k, device choice, config parsing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from recengine.models.base import EpochEvent, check_range, clip_repr, config_from_dict, resolve_device, top_k


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


@pytest.mark.parametrize("value", ["1e308", "2.5", "nan", "inf", "\u00b2", "\u0663", "0x10", "", "x" * 200, 2.5, float("inf"), None])
def test_int_fields_take_only_whole_numbers(value) -> None:
    with pytest.raises(ValueError, match="hyper-parameter epochs must be int, got "):
        config_from_dict(_Config, {"epochs": value})


@pytest.mark.parametrize(("value", "expected"), [("7", 7), (" -3 ", -3), ("+4", 4), (5.0, 5), (2**63, 2**63), (str(2**70), 2**70)])
def test_int_fields_parse_exactly(value, expected) -> None:
    assert config_from_dict(_Config, {"epochs": value}).epochs == expected  # no float rounding of big ints


def test_text_longer_than_any_allowed_value_is_refused_and_clipped() -> None:
    with pytest.raises(ValueError) as caught:
        config_from_dict(_Config, {"optimizer": "y" * 10_000})
    assert len(str(caught.value)) < 200 and str(caught.value).endswith("…")
    with pytest.raises(ValueError) as caught:
        config_from_dict(_Config, {"z" * 10_000: 1})
    assert len(str(caught.value)) < 300


def test_clip_repr_escapes_and_clips() -> None:
    assert clip_repr("ab") == "'ab'"
    assert clip_repr("\x1b[31m\r\x00") == "'\\x1b[31m\\r\\x00'"  # control characters escaped, never raw
    clipped = clip_repr("x" * 1000, 20)
    assert len(clipped) == 20 and clipped == "'" + "x" * 18 + "…"


def test_check_range_names_the_bounds() -> None:
    check_range("epochs", 1, 1, 10)
    check_range("epochs", 10, 1, 10)
    check_range("dropout", 0.5, 0.0, 1.0, integer=False)
    for value in (0, 11, 2**63, True, 5.0, "5", None):
        with pytest.raises(ValueError, match=r"epochs must be an integer from 1 to 10, got "):
            check_range("epochs", value, 1, 10)
    with pytest.raises(ValueError, match=r"size must be an integer from 1 to 4,096, got 4097"):
        check_range("size", 4097, 1, 4096)
    for value in (float("nan"), float("inf"), 1.5, True):
        with pytest.raises(ValueError, match="dropout must be a number from 0.0 to 1.0"):
            check_range("dropout", value, 0.0, 1.0, integer=False)


@pytest.mark.parametrize(
    ("model", "field", "limit"),
    [
        ("mf", "embedding_dim", 4096), ("mf", "epochs", 10_000), ("mf", "batch_size", 2**24),
        ("als", "factors", 4096), ("als", "iterations", 1000), ("als", "cg_steps", 100),
        ("seq-pooling", "embedding_dim", 4096), ("seq-pooling", "epochs", 10_000), ("seq-pooling", "max_length", 1024),
        ("seq-pooling", "batch_size", 65_536), ("seq-pooling", "n_negatives", 2**20),
        ("seq-transformer", "n_layers", 64), ("seq-transformer", "n_heads", 64), ("seq-lstm", "n_layers", 64),
    ],
)  # fmt: skip
def test_every_config_bounds_its_sizes(model, field, limit) -> None:
    from recengine.models.base import get_model_class

    config_cls = get_model_class(model).Config
    extra = {"embedding_dim": limit} if field == "n_heads" else {}  # n_heads must divide embedding_dim
    assert getattr(config_from_dict(config_cls, {field: limit, **extra}), field) == limit
    for value in (limit + 1, 2**63):
        with pytest.raises(ValueError, match=rf"{field} must be an integer from \d+ to {limit:,}, got {value}"):
            config_from_dict(config_cls, {field: value, **extra})
