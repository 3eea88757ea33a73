"""Declares uvicorn an optional import, then imports it at the top anyway."""

from __future__ import annotations

import uvicorn  # noqa: F401 - the mistake the imports.optional check catches

from conformance.broken import Good


class EagerImport(Good):
    name = "eager_import"
    breaks = "imports.optional"
    optional_imports = ("uvicorn",)
