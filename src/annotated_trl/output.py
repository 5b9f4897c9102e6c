"""Refuse an `--output_dir` that training could not write to, before any model is loaded.

A run that cannot save fails at its first checkpoint, minutes or hours in, with a traceback from
deep inside `torch.save`. This check costs a millisecond at start-up instead: it writes and
deletes a small probe file where the run will write, so every reason a write can fail (no
permission, a read-only or full disk, a quota, a file size limit, a path through a file) shows
up as one line now. It creates nothing: a folder that does not exist yet is probed through its
nearest existing parent, and the trainer creates it later as usual.

What it cannot see is a disk that fills *during* the run. Checkpoints are what protect that
case: a save that fails leaves the earlier checkpoints intact, and `--resume_from_checkpoint`
continues from the last complete one exactly (tests/test_fault.py).
"""

import errno
import os
import tempfile
from pathlib import Path

# Enough bytes that a full disk refuses the write itself, not only the file's creation.
PROBE_BYTES = 4096

REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EFBIG: "the file size limit (ulimit -f) is reached",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


class OutputDirError(ValueError):
    """The output folder cannot be written. The message is one line: path, problem, expected."""


def _reason(err: OSError) -> str:
    return REASONS.get(err.errno, err.strerror or type(err).__name__)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """Raise OutputDirError unless files can be written in `output_dir` (or where it will be)."""
    path = Path(output_dir).expanduser().absolute()
    expected = "expected a folder you can write to"
    try:
        is_file = path.exists() and not path.is_dir()
        parent = _nearest_existing(path)
        parent_is_dir = parent.is_dir()
    except OSError as err:  # e.g. a parent folder we may not even look into
        raise OutputDirError(
            f"--output_dir {output_dir}: cannot reach it: {_reason(err)}; {expected}"
        ) from None
    if is_file:
        raise OutputDirError(f"--output_dir {output_dir}: is a file, not a folder; {expected}")
    if not parent_is_dir:
        raise OutputDirError(
            f"--output_dir {output_dir}: {parent} is a file, so no folder can be made under it; "
            f"{expected}"
        )
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".write-probe-", dir=parent)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(b"\0" * PROBE_BYTES)
                file.flush()
                os.fsync(file.fileno())
        finally:
            os.unlink(probe)
    except OSError as err:
        where = "" if parent == path else f" (probed its nearest existing parent {parent})"
        raise OutputDirError(
            f"--output_dir {output_dir}: cannot write there: {_reason(err)}{where}; {expected}"
        ) from None
