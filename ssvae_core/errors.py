"""Errors with messages meant for the user, not tracebacks."""


class DataError(Exception):
    """A dataset is missing or malformed; the message says what to do."""


class CheckpointError(Exception):
    """A checkpoint cannot be loaded; the message names the file and why."""


class TrainingError(Exception):
    """Training cannot go on (e.g. the loss became NaN); the last good state is kept."""
