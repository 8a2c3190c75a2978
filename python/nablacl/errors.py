"""Exceptions: one class per library status, all under NablaError.

Every exception carries ``status`` (the C code), ``status_name`` (e.g. "INVALID_ARGUMENT") and
``message`` (the context's last-error text, or the package's own when it refused the call before
reaching the library). Arguments the package checks itself (dtypes, contiguity, shapes, devices)
raise ``InvalidArgument`` before anything is uploaded or enqueued.
"""
from __future__ import annotations

from typing import Dict, Optional, Type


class NablaError(Exception):
    """A failure of the nablacl library (or an argument refused before calling it)."""

    status: int = 0
    status_name: str = ""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        if status is not None:
            self.status = status
            self.status_name = STATUS_NAMES.get(status, "UNKNOWN")
        self.message = message
        super().__init__(f"{self.status_name}: {message}" if self.status_name else message)


class InvalidArgument(NablaError, ValueError):
    """A bad argument (NULL, shape, dtype, threshold, window, mismatch); nothing ran."""

    status, status_name = -1, "INVALID_ARGUMENT"


class OutOfMemory(NablaError, MemoryError):
    """A host or device allocation failed."""

    status, status_name = -2, "OUT_OF_MEMORY"


class OpenCLError(NablaError):
    """An OpenCL call failed; the message names the call and the CL error."""

    status, status_name = -3, "OPENCL"


class BuildError(NablaError):
    """A kernel failed to build; the message holds the build log."""

    status, status_name = -4, "BUILD"


class Unsupported(NablaError):
    """The device lacks a feature or a limit is exceeded."""

    status, status_name = -5, "UNSUPPORTED"


class NoDevice(NablaError):
    """No OpenCL device matches the selector; the message lists the devices."""

    status, status_name = -6, "NO_DEVICE"


class BufferTooSmall(NablaError, ValueError):
    """A buffer is smaller than the operation needs."""

    status, status_name = -7, "BUFFER_TOO_SMALL"


class FileError(NablaError, OSError):
    """File input/output failed."""

    status, status_name = -8, "IO"


class NotFound(NablaError, LookupError):
    """A named item (kernel, stage, cache entry) does not exist."""

    status, status_name = -9, "NOT_FOUND"


_CLASSES: Dict[int, Type[NablaError]] = {
    c.status: c
    for c in (InvalidArgument, OutOfMemory, OpenCLError, BuildError, Unsupported, NoDevice,
              BufferTooSmall, FileError, NotFound)
}
STATUS_NAMES: Dict[int, str] = {0: "OK", **{code: c.status_name for code, c in _CLASSES.items()}}


def error_for(status: int, message: str) -> NablaError:
    """The exception for a status code (NablaError itself for a code the package does not know)."""
    cls = _CLASSES.get(status)
    if cls is None:
        return NablaError(message, status)
    return cls(message)
