"""The one error model loading raises."""


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why in one line."""
