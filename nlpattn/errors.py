"""Error types: every user-facing failure is an `NlpattnError` with a one-line message."""


class NlpattnError(Exception):
    """Base class: the CLI prints the message on one line and exits with code 2."""


class ConfigError(NlpattnError, ValueError):
    """A config file or `key=value` override is invalid (message names file and key)."""


class DataError(NlpattnError, ValueError):
    """An input file is missing, empty, malformed or not text (message names file and line)."""


class CheckpointError(NlpattnError):
    """A checkpoint or run directory is missing or incomplete (message names the path)."""


class TrainingError(NlpattnError):
    """Training cannot go on (non-finite loss, out of memory estimate); message names the step."""


class OutputError(NlpattnError):
    """An output path cannot be written (exists, is a file, not writable, disk full); names it."""
