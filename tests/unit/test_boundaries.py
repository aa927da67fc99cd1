"""The serving install has no torch/transformers: service/ must never import them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_service_loads_no_ml_framework() -> None:
    code = (
        "import sys, service.app, service.routes, export.bundle, export.features, polyprobe.cli;"
        "print([m for m in ('torch', 'transformers', 'optimum') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_lint_rule_rejects_torch_in_service() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--output-format",
            "json",
            "--stdin-filename",
            "service/new_module.py",
            "-",
        ],
        cwd=ROOT,
        input="import torch\nfrom transformers import AutoModel\n",
        capture_output=True,
        text=True,
    )
    codes = [finding["code"] for finding in json.loads(result.stdout)]
    assert codes.count("TID251") == 2, result.stdout


def test_lint_rule_allows_torch_outside_service() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--output-format",
            "json",
            "--stdin-filename",
            "export/some_module.py",
            "-",
        ],
        cwd=ROOT,
        input="import torch\n\nprint(torch)\n",
        capture_output=True,
        text=True,
    )
    assert [f["code"] for f in json.loads(result.stdout)] == []
