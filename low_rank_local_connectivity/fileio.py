"""File operations on local paths and, through TensorFlow, on remote ones.

Run directories and exports may live on a local disk or behind a URL such as
'gs://bucket/run'. Local paths use the standard library, so that reading and
writing a run's files never imports TensorFlow; a path with '://' goes through
`tf.io.gfile`, imported only then.
"""

import glob as glob_lib
import os
import shutil
import sys


def is_remote(path):
    """Whether `path` is a URL ('gs://...') rather than a local path."""
    return "://" in os.fspath(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def exists(path):
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path):
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def makedirs(path):
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path):
    """Entry names of a directory (no trailing '/')."""
    if is_remote(path):
        return [name.rstrip("/") for name in _gfile().listdir(path)]
    return os.listdir(path)


def glob(pattern):
    return _gfile().glob(pattern) if is_remote(pattern) else glob_lib.glob(pattern)


def open_file(path, mode="r"):
    """A file object of `path` (text modes only for remote paths)."""
    if is_remote(path):
        return _gfile().GFile(path, mode)
    return open(path, mode)


def rename(source, target):
    """Renames `source` onto `target`, replacing a file there."""
    if is_remote(source):
        _gfile().rename(source, target, overwrite=True)
    else:
        os.replace(source, target)


def remove(path):
    if is_remote(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def rmtree(path):
    if is_remote(path):
        _gfile().rmtree(path)
    else:
        shutil.rmtree(path)


def io_errors():
    """The exception types a failed file operation raises (TensorFlow's too,
    once it is imported: remote paths and checkpoint writes raise those)."""
    tf = sys.modules.get("tensorflow")
    return (OSError,) if tf is None else (OSError, tf.errors.OpError)
