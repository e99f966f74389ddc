"""The one error every model-file problem raises."""

from __future__ import annotations


class CheckpointError(Exception):
    """A model part is missing, incomplete or inconsistent; the message names the path and the file."""
