"""Exceptions whose message is a complete one-line explanation for the user."""


class FireRedFastError(Exception):
    """Base class: str(exc) is shown to the user as is, after the file it concerns."""


class ModelDirError(FireRedFastError):
    """A model directory is missing, incomplete, or holds something that is not a model."""


class MediaError(FireRedFastError):
    """A media file cannot be read or decoded (corrupt, truncated, no audio stream, ...)."""
