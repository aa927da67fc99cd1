"""Fault injectors around the real ONNX Runtime backend, installed through `create_app`'s factory.

They are not stand-ins for the model: every call that is not faulted runs the real session.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np

from service.backend import BackendFactory, BackendLoadError, InferenceBackend, OnnxRuntimeBackend
from service.settings import Settings


class Fault:
    """What happens to the next `run` calls: nothing, an exception, or a stall at a gate."""

    def __init__(self) -> None:
        self.mode = "pass"
        self.gate = threading.Event()
        self.entered = threading.Event()

    def stall(self) -> None:
        self.gate.clear()
        self.entered.clear()
        self.mode = "stall"

    def fail(self) -> None:
        self.mode = "raise"

    def heal(self) -> None:
        self.mode = "pass"
        self.gate.set()


class FaultyBackend:
    def __init__(self, inner: InferenceBackend, fault: Fault) -> None:
        self.inner = inner
        self.fault = fault

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.inner.input_names

    @property
    def provider(self) -> str:
        return self.inner.provider

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.fault.mode == "raise":
            raise RuntimeError("injected fault: the inference session failed")
        if self.fault.mode == "stall":
            self.fault.entered.set()
            # Bounded, so a failing test cannot leave the server's worker blocked forever.
            if not self.fault.gate.wait(timeout=120):
                raise RuntimeError("injected stall was never released")
        return self.inner.run(feeds)


def faulty_factory(faults: Mapping[str, Fault], unloadable: Collection[str] = ()) -> BackendFactory:
    """Backends for `<name>/<version>` keys in `faults` get that fault; `unloadable` names fail to load."""

    def factory(model_path: Path, settings: Settings) -> InferenceBackend:
        version_dir = model_path.parent
        name, version = version_dir.parent.name, version_dir.name
        if name in unloadable:
            raise BackendLoadError(f"injected fault: no session can be created for {name}")
        inner = OnnxRuntimeBackend(model_path, settings)
        fault = faults.get(f"{name}/{version}")
        return FaultyBackend(inner, fault) if fault is not None else inner

    return factory
