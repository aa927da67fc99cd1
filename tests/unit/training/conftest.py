from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_xlmr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="training tests need the train extra")
    from tests.unit.training_helpers import build_tiny_xlmr

    return build_tiny_xlmr(tmp_path_factory.mktemp("tiny-xlmr"))
