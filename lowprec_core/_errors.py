"""The LowprecError tree. Each class carries the exit code the CLI returns for it."""

from __future__ import annotations


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's whole message on one line, cut at `limit` characters (a library's message
    can span lines, with the useful part, such as a node's name, on a later one)."""
    text = " ".join(str(err).split()) or err.__class__.__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LowprecError(Exception):
    """Base of every error lowprec raises on purpose; ``str(err)`` is one line for the user."""

    exit_code = 1


class ConfigError(LowprecError):
    """An argument or config value is not one of the accepted values."""

    exit_code = 2


class ModelError(LowprecError):
    """The model file is missing, not ONNX, truncated or not runnable."""

    exit_code = 3


class DataError(LowprecError):
    """Calibration or evaluation data does not match the model."""

    exit_code = 4


class StatsError(LowprecError):
    """A statistics file is missing, malformed or belongs to another model."""

    exit_code = 5


class RegistryError(LowprecError):
    """The object store cannot be reached, or refused a read or write."""

    exit_code = 6


class IntegrityError(RegistryError):
    """A fetched file does not match the sha256 its manifest records."""

    exit_code = 7


class PipelineError(LowprecError):
    """A pipeline task failed; its own log above says why."""

    exit_code = 8


class GateFailed(LowprecError):
    """Validation ran and the INT8 model failed the accuracy gate."""

    exit_code = 10
