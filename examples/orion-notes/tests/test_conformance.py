"""The SDK's conformance suite, one pytest test per check (the pytest plugin ships in orion-kernel)."""

from orion_notes import Notes

from plugin_sdk.testing import PluginConformance


class TestNotesConformance(PluginConformance):
    plugin = Notes
    strict = True  # no opting out of core checks
