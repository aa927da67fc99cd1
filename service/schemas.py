"""Request and response bodies of the native v1 API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TextInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="the text, or the first sentence of a pair")
    text_pair: str | None = Field(
        default=None,
        min_length=1,
        description="the second sentence, for pair-classification models",
    )


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[TextInput] = Field(description="one or more texts or text pairs")


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float] = Field(
        description="probability of every label, in label order"
    )
    margin: float = Field(description="top probability minus the runner-up's")
    entropy: float = Field(description="entropy of the label distribution, in nats")
    truncated: bool = Field(description="the input was cut to the model's max sequence length")
    num_tokens: int = Field(description="tokens the model saw, special tokens included")


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[Prediction]


class ModelSummary(BaseModel):
    name: str
    state: str
    versions: list[str]
    served_version: str | None = None
    task: str | None = None
    labels: list[str] | None = None
    precision: str | None = None
    provider: str | None = None
    error: str | None = Field(
        default=None,
        description="why the model does not serve, or why refused_version was refused",
    )
    refused_version: str | None = Field(
        default=None, description="newest version on disk, refused: an older one (if any) serves"
    )
    draining_versions: list[str] = Field(
        default_factory=list, description="replaced versions still finishing in-flight requests"
    )


class ModelList(BaseModel):
    models: list[ModelSummary]


class ModelDetail(ModelSummary):
    manifest: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    error: dict[str, Any]
