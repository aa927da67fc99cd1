"""The inference backend seam: ONNX Runtime in production, anything with `run` in tests."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from export.bundle import BundleManifest, ModelVariant, Precision

from service.settings import Settings

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class InferenceBackend(Protocol):
    """Runs one padded batch; returns logits of shape (batch, labels)."""

    @property
    def input_names(self) -> tuple[str, ...]: ...

    @property
    def provider(self) -> str: ...

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...


BackendFactory = Callable[[Path, Settings], InferenceBackend]


class BackendLoadError(RuntimeError):
    """The model file could not be turned into a runnable session."""


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers in priority order for the requested device."""
    if device == "cuda":
        if CUDA not in available:
            raise BackendLoadError(
                f"POLYPROBE_DEVICE=cuda but ONNX Runtime offers only {available}: install "
                "polyprobe[gpu] (onnxruntime-gpu) on a machine with a CUDA GPU, or use device=auto"
            )
        return [CUDA, CPU]
    if device == "auto" and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def choose_variant(
    manifest: BundleManifest, *, on_cuda: bool, forced: Precision | None
) -> ModelVariant:
    """fp16 on CUDA, int8 on CPU when its parity check passed, else fp32; or the forced one."""
    if forced is not None:
        variant = manifest.variant(forced)
        if variant is None:
            have = [m.precision for m in manifest.models]
            raise BackendLoadError(f"POLYPROBE_PRECISION={forced} but the bundle has only {have}")
        return variant
    preferred: tuple[Precision, ...] = ("fp16", "fp32") if on_cuda else ("int8", "fp32")
    for precision in preferred:
        variant = manifest.variant(precision)
        if variant is not None and (variant.parity is None or variant.parity.passed):
            return variant
    return manifest.models[0]


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), not the host's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def intra_op_threads(settings: Settings, cores: int) -> int:
    """Threads of one ONNX Runtime call: the batcher runs `inference_streams` calls at once
    (the session is shared; ONNX Runtime allows concurrent runs), and they share the cores."""
    return settings.intra_op_threads or max(1, cores // settings.inference_streams)


def session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads(settings, available_cores())
    options.inter_op_num_threads = 1
    return options


class OnnxRuntimeBackend:
    """One reusable ONNX Runtime session with all graph optimisations on.

    On CUDA, inputs and the output go through IO binding: ONNX Runtime copies the host arrays
    to the device once and leaves the logits on the device until one copy back, instead of
    staging every tensor through its own host buffers.
    """

    def __init__(self, model_path: Path, settings: Settings) -> None:
        options = session_options(settings)
        providers = choose_providers(settings.device, ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise BackendLoadError(f"ONNX Runtime cannot load {model_path.name}: {exc}") from exc
        self._input_names = tuple(i.name for i in self._session.get_inputs())
        self._output_name = self._session.get_outputs()[0].name
        self._provider: str = self._session.get_providers()[0]
        logger.info("loaded %s on %s", model_path, self._provider)

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._input_names

    @property
    def provider(self) -> str:
        return self._provider

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self._provider == CUDA:
            return self.run_bound(feeds, "cuda")
        (logits,) = self._session.run([self._output_name], feeds)
        return np.asarray(logits, dtype=np.float32)

    def run_bound(self, feeds: dict[str, np.ndarray], output_device: str) -> np.ndarray:
        """One run through IO binding, the output left on `output_device` until one copy back.
        Serving uses it on CUDA; on "cpu" the same path runs (and is tested) without a GPU."""
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        binding.bind_output(self._output_name, output_device)
        self._session.run_with_iobinding(binding)
        (logits,) = binding.copy_outputs_to_cpu()
        return np.asarray(logits, dtype=np.float32)


def uses_cuda(device: str) -> bool:
    """Whether sessions for this device setting will run on CUDA (raises if cuda is impossible)."""
    return CUDA in choose_providers(device, ort.get_available_providers())
