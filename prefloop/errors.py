"""One exception tree for everything prefloop means a person to read (httpx's lesson: the class tells the caller
what to do, and one ``except`` at the command's top turns any of them into one line and an exit code).

    PrefloopError                   exit_code: what the command returns
    ├── BadInput          (2)       fix the input, setting or folder the message names, then run again
    │     ConfigError, DataError, RecordError, TemplateError, ExportError, ModelNotFound, TrainError,
    │     SetupError, NeedsTerminal
    ├── Busy              (2)       another run holds this output: wait for it, or give another output
    └── RunFailed         (1)       finished work is kept; the same command again retries or resumes
          SchemaError, LLMError (Transient, ServerFatal, ReplyInvalid), StageFailed; ServerUnreachable (a ServerFatal
          before anything was sent: start the server or fix the host, exit 2)

The existing classes keep their names and their old bases too (``ConfigError`` is still a ``ValueError``,
``ModelNotFound`` a ``FileNotFoundError``), so code that catches those goes on working.
``problem(exc)`` words an OS error (a read-only folder, a full disk, a directory given as a file) as one line
naming the path and the fix, for the same top-level handler.
"""

from __future__ import annotations

import errno


class PrefloopError(Exception):
    """An error meant for a person: its message says what is wrong and what to do; ``exit_code`` is the command's
    exit status."""

    exit_code = 2


class BadInput(PrefloopError):
    """Something given is wrong (a file, a line, a setting, a folder): fix what the message names (exit 2)."""

    exit_code = 2


class RunFailed(PrefloopError):
    """The work could not finish now; what finished is kept and the same command resumes it (exit 1)."""

    exit_code = 1


FIXES = {
    errno.EACCES: "choose another path or make it writable",
    errno.EPERM: "choose another path or make it writable",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOSPC: "the disk is full; free space there (or choose another path) and run the same command again",
    errno.EDQUOT: "the disk quota is used up; free space and run the same command again",
    errno.EISDIR: "a folder is where a file was expected; give the file",
    errno.ENOTDIR: "a file is where a folder was expected; choose another path",
}


def problem(exc: OSError) -> str:
    """One line for an OS error: the path, what the system said, and the fix."""
    if exc.filename is None:
        return str(exc)
    fix = FIXES.get(exc.errno or 0, "check the path and its permissions")
    return f"{exc.filename}: {exc.strerror or exc}; {fix}"
