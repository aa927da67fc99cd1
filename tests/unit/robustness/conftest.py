"""Fixtures shared by the robustness tests: real multilingual sentences from ../shared/data."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# tests/unit/robustness/conftest.py -> parents[3] is the repository root; shared/ sits beside it.
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
ROWS_PER_FILE = 12


@dataclass(frozen=True)
class RealPair:
    source: str  # e.g. "xnli/dev/hi"
    lang: str
    text: str
    text_pair: str


def shared_data_dir() -> Path:
    return Path(os.environ.get("POLYPROBE_SHARED_DATA", DEFAULT_SHARED_DATA)).resolve()


def load_real_pairs(rows_per_file: int = ROWS_PER_FILE) -> list[RealPair]:
    """The first rows of every PAWS-X and XNLI dev file, every language."""
    pairs = []
    for path in sorted(shared_data_dir().glob("*/dev/*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for _, line in zip(range(rows_per_file), handle, strict=False):
                row = json.loads(line)
                first = row.get("sentence1", row.get("premise"))
                second = row.get("sentence2", row.get("hypothesis"))
                source = f"{path.parent.parent.name}/dev/{path.stem}"
                pairs.append(RealPair(source, path.stem, first, second))
    return pairs


@pytest.fixture(scope="session")
def real_pairs() -> list[RealPair]:
    directory = shared_data_dir()
    if not directory.is_dir():
        pytest.skip(
            f"shared data not found at {directory}: put PAWS-X/XNLI dev beside the repository "
            f"(../shared/data) or set POLYPROBE_SHARED_DATA"
        )
    pairs = load_real_pairs()
    if not pairs:
        pytest.skip(f"no */dev/*.jsonl files under {directory}")
    return pairs
