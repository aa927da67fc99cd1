"""The served ONNX graph computes what the PyTorch checkpoint computes.

Tolerance: 1e-4 absolute on logits (fp32 both sides; only kernel summation order differs), and
identical argmax, on inputs in all demo languages including a truncated one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.features import BundleTokenizer
from export.parity import builtin_sample
from service.backend import OnnxRuntimeBackend
from service.repository import ModelLocation, load_model
from service.settings import Settings

pytestmark = pytest.mark.integration

LOGIT_TOLERANCE = 1e-4


def test_onnx_runtime_matches_pytorch(demo_checkpoint, demo_bundle: Path) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForSequenceClassification

    served = load_model(
        ModelLocation("demo", "1", demo_bundle),
        Settings(model_repo=demo_bundle),
        OnnxRuntimeBackend,
    )
    pairs = [*builtin_sample().pairs, ("Hallo Welt", None), ("こんにちは", "안녕하세요")]
    encoded = served.tokenizer.encode(pairs)
    assert any(encoded.truncated), "the sample must exercise truncation"
    onnx_logits = served.backend.run(encoded.feeds)

    model = AutoModelForSequenceClassification.from_pretrained(demo_checkpoint.path).eval()
    with torch.inference_mode():
        feeds = {name: torch.from_numpy(array) for name, array in encoded.feeds.items()}
        torch_logits = model(**feeds).logits.numpy()

    assert onnx_logits.shape == (len(pairs), 2)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=LOGIT_TOLERANCE, rtol=0)
    assert (onnx_logits.argmax(-1) == torch_logits.argmax(-1)).all()


def test_served_tokenizer_matches_the_checkpoint_tokenizer(
    demo_checkpoint, demo_bundle: Path
) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(demo_checkpoint.path)
    served = BundleTokenizer.from_file(
        demo_bundle / "tokenizer.json", max_length=128, input_names=["input_ids", "attention_mask"]
    )
    for text, text_pair in builtin_sample().pairs[:-1]:
        expected = reference(text, text_pair)["input_ids"]
        assert served.encode([(text, text_pair)]).feeds["input_ids"][0].tolist() == expected


def test_the_io_binding_path_computes_what_a_plain_run_does(demo_bundle: Path) -> None:
    """Serving on CUDA runs every batch through IO binding; bound to the CPU here, the same code
    path runs without a GPU and must give the plain run's logits, batch padding included."""
    served = load_model(
        ModelLocation("demo", "1", demo_bundle),
        Settings(model_repo=demo_bundle, device="cpu"),
        OnnxRuntimeBackend,
    )
    assert isinstance(served.backend, OnnxRuntimeBackend)
    pairs = [*builtin_sample().pairs, ("Hallo Welt", None)]
    feeds = served.tokenizer.encode(pairs).feeds
    bound = served.backend.run_bound(feeds, "cpu")
    assert bound.dtype == np.float32
    np.testing.assert_array_equal(bound, served.backend.run(feeds))
