"""The one exception type of the data layer."""


class DataError(ValueError):
    """Bad data on disk or a bad data argument; the message names the file (or argument), says what is wrong and
    what to do about it."""
