"""What the routes share, hung on `app.state.service` by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.batcher import Engines
from service.metrics import ServiceMetrics
from service.repository import ModelEntry
from service.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    metrics: ServiceMetrics
    models: dict[str, ModelEntry] = field(default_factory=dict)
    loaded: bool = False
    engines: Engines = field(init=False)

    def __post_init__(self) -> None:
        self.engines = Engines(self.settings, self.metrics)
