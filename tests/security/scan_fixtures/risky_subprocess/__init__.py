"""Starts a process without asking for ``subprocess`` (a scanner fixture)."""

from .plugin import RiskyPlugin as RiskyPlugin
