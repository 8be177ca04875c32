"""Error types that the command line turns into one `error:` line and exit code 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A hyperparameter or spec field with a bad name or value; the message says the fix."""


class SpecError(ConfigError):
    """A bad study spec."""


class ResultsError(Exception):
    """A study's results cannot be read as asked; the message says why and what to do."""


class StudyNotFoundError(ResultsError, FileNotFoundError):
    """No study folder (or no results in it) where one was named."""
