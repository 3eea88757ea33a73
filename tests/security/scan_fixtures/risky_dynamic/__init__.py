"""Imports modules named at run time (a scanner fixture)."""

import importlib
import importlib.util

from plugin_sdk import Plugin

from . import _known  # a static import: scanned, no finding


def load(name: str) -> object:
    return importlib.import_module(name)  # expect: dynamic-import


def load_builtin(name: str) -> object:
    return __import__(name)  # expect: dynamic-import


def load_file(path: str) -> object:
    return importlib.util.spec_from_file_location("anything", path)  # expect: dynamic-import


def constant() -> object:
    return importlib.import_module("risky_dynamic._also_known")  # a constant name: followed, no finding


class DynamicPlugin(Plugin):
    name = "risky_dynamic"
    version = "1.0.0"
    known = _known
