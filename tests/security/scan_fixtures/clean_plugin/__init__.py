"""A plugin that only computes (a scanner fixture): no finding at or above low."""

from .plugin import CleanPlugin as CleanPlugin
