"""One exception family for everything a user can cause.

Every message says what went wrong, where, and how to fix it. ``cli.py`` is the only place
that turns these into exit codes (``exit_code``): 1 for user/data errors, 2 for usage errors.
"""

from __future__ import annotations


class FaceclError(Exception):
    """Base of every expected error. ``hint`` says how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(FaceclError):
    """Wrong combination of options or arguments."""

    exit_code = 2


class ConfigError(UsageError):
    """Invalid configuration value or key (an option value, a config-file key, an unknown
    choice): a usage error, exit 2, wherever the config is validated (``__post_init__``)."""


class UnknownNameError(ConfigError):
    """A registry lookup for a name that is not registered."""


class InputError(FaceclError):
    """Bad input data: missing file, unreadable image, malformed list."""


class ArtifactError(FaceclError):
    """A missing, incomplete, corrupt or wrong-stage artifact directory."""


class SchemaVersionError(ArtifactError):
    """An artifact written with a schema this version of facecl cannot read."""


class IntegrityError(ArtifactError):
    """A file whose checksum does not match its manifest."""


class CheckpointError(FaceclError):
    """A checkpoint that is corrupt, unsafe, or of another architecture."""


class StorageError(FaceclError):
    """The file system refused a write or a read: read-only, full, name too long, not a
    directory, busy (``facecl.oserrors`` maps an ``OSError`` to one of these)."""


class LockedError(FaceclError):
    """Another live facecl process is writing the same output."""
