"""Imported by a constant importlib.import_module: part of the scan too."""

import pickle


def restore(blob: bytes) -> object:
    return pickle.loads(blob)  # expect: deserialize
