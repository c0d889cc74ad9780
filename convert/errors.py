"""Exceptions of the converter."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConversionError"]


class ConversionError(ValueError):
    """Weights do not fit the model: carries the :class:`~flaxcnn.convert.ConversionReport`."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class CheckpointError(ConversionError):
    """A checkpoint file or object could not be read as a state dict."""
