"""orion-notes: a persistent notes store, as a plugin for Orion Kernel.

Enable it in ``orion.toml`` with ``[plugins.notes] enabled = true``; the
kernel finds :class:`Notes` through the ``orion_kernel.plugins`` entry point.
"""

from .plugin import Notes as Notes
from .plugin import NotesFull as NotesFull
from .plugin import NotesService as NotesService
from .plugin import NotesSettings as NotesSettings

__version__ = Notes.version

__all__ = ["Notes", "NotesFull", "NotesService", "NotesSettings", "__version__"]
