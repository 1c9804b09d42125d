"""User-facing error types.

Every error a user can cause (a bad file, an unknown model, a bad parameter) is raised as one of
these. The CLI prints the message without a traceback; the API maps them to 4xx responses.
"""


class BrushpenError(Exception):
    """Base class for errors caused by user input, shown as a plain message."""

    http_status = 400


class BadParameter(BrushpenError):
    """A parameter is out of range or of the wrong kind."""


class BadInput(BrushpenError):
    """An input file or dataset is unreadable, corrupt or empty."""


class ModelNotFound(BrushpenError):
    """No model of that name is in the store."""

    http_status = 404


class UnsafeWeights(BrushpenError):
    """A weight file is in a format we never load (pickle-based .pt, .pkl, .bin, ...)."""


class BrokenModel(BrushpenError):
    """A model folder exists but is missing files or holds unreadable ones."""

    http_status = 422


class EngineUnavailable(BrushpenError):
    """The engine a model runs on (an OpenAI-compatible server, `BRUSHPEN_ENGINE_URL`) cannot be
    reached or failed: the request was fine, try again once the engine is back."""

    http_status = 502
