"""The error every importer raises for bad input data."""
from __future__ import annotations


class DataError(ValueError):
    """Raw input data is unusable; the message names the file and the line, row or field."""
