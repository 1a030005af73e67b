"""Every error a stage reports as one clear line; the bottom of the import graph, so any module may raise them.

``cli.run_stage`` catches :class:`PipelineError` and prints its message (exit 2); anything else is a bug
and keeps its stack trace.
"""

from __future__ import annotations


class PipelineError(Exception):
    """An expected failure whose message says where (key, file, line) and what to do."""


class ConfigError(PipelineError, ValueError):
    """A bad value in params.yaml; the message names the key path and what is allowed."""


class InputError(PipelineError, ValueError):
    """Bad user input (data rows, files, predictions); the message says where and what is allowed."""


class ModelFileError(PipelineError, ValueError):
    """A model directory or file that cannot be used; the message names the path and the problem."""


class OutOfMemory(PipelineError, MemoryError):
    """A batch did not fit in RAM or GPU memory; the message says which knob to lower."""
