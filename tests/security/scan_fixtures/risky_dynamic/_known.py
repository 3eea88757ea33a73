"""Imported statically by the plugin: part of the scan."""

VALUE = 1
