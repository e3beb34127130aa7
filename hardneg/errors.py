"""Errors that are the user's to fix: the entry points print them without a traceback."""


class UserError(Exception):
    """Bad input or configuration; the message says what is wrong and how to fix it."""


class DatasetNotFoundError(UserError):
    """A dataset's files are not where the configuration says."""


class ConfigError(UserError):
    """A configuration value is invalid."""
