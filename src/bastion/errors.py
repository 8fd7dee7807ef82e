"""Every error bastion raises on purpose derives from BastionError, so callers can catch one type.

Messages name the offending key, field, file or value: a user should be able to fix the input from the
message alone.
"""

from __future__ import annotations


class BastionError(Exception):
    """Base class for errors raised deliberately by bastion."""


class ConfigError(BastionError, ValueError):
    """A configuration value or key is invalid (unknown key, out-of-range value, bad schedule)."""


class InputValidationError(BastionError, ValueError):
    """A tensor handed to bastion has the wrong shape, dtype, non-finite values or leaves its domain."""


class DataFormatError(BastionError, ValueError):
    """A data file is malformed: truncated, wrong magic number, bad row, unknown label."""


class DataNotFoundError(BastionError, FileNotFoundError):
    """A dataset path or one of the files it must contain does not exist."""


class CheckpointError(BastionError, ValueError):
    """A saved model or run folder is missing, corrupt, or does not match what it claims to be."""


class NotFittedError(BastionError, RuntimeError):
    """A detector or preprocessor was used before `fit`."""
