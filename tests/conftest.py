"""Shared fixtures: real MovieLens data when present (else skip), isolated model and cache folders."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest

# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads
# slow every torch operation several-fold. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def real_data_dir() -> Path | None:
    """$RECENGINE_DATA_DIR when it is set and exists, else None."""
    value = os.environ.get("RECENGINE_DATA_DIR")
    return Path(value) if value and Path(value).is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    """The folder holding real MovieLens releases; skips the test when there is none."""
    folder = real_data_dir()
    if folder is None:
        pytest.skip("real MovieLens data not available (set RECENGINE_DATA_DIR)")
    return folder


@contextlib.contextmanager
def import_script(path: Path, name: str) -> Iterator[ModuleType]:
    """A script (e.g. benchmarks/load.py) imported as module `name` for the duration of the block."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


def require_release(name: str) -> Path:
    """Path of one real release (e.g. "ml-100k"); skips when it is absent."""
    folder = real_data_dir()
    if folder is None or not (folder / name).is_dir():
        pytest.skip(f"{name} not available under RECENGINE_DATA_DIR")
    return folder / name


@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path_factory, monkeypatch):
    """Every test writes models, caches, profiles and uploads into its own temporary folders."""
    root = tmp_path_factory.mktemp("recengine-home")
    monkeypatch.setenv("RECENGINE_MODELS_DIR", str(root / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(root / "data"))  # saved profiles and uploads
    for name in ("RECENGINE_PROFILES_DB", "RECENGINE_UPLOADS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECENGINE_DEVICE", "cpu")
