"""Files written whole or not at all: a temporary file in the same folder, flushed to disk, then renamed over the
target. A crash (or a full disk) leaves the old file, never a torn one, and no temporary file behind."""
import json
import os
from contextlib import contextmanager

import torch


@contextmanager
def atomic_path(path: str):
    """Yields a temporary path to write; on success it replaces `path`, on an exception it is removed."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data reaches the disk before the rename does: a power cut leaves one or the other
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save(obj, path: str):
    """torch.save, atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(text: str, path: str):
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)


def atomic_write_json(obj, path: str):
    atomic_write_text(json.dumps(obj, indent=1), path)
