"""The plugin scanner: static checks of a plugin's code against the permissions it asks for.

Enable with ``[plugins.scanner] enabled = true`` and
``permissions = ["hook:vet_plugin"]``: every other plugin is then scanned
before it starts and refused when its code can do something it does not ask
for (``refuse_at``).  ``orion-kernel scan TARGET`` runs the same scan from the
command line, without starting a kernel.  A vetting aid, not a boundary:
see docs/security/scanner.md for what a static scan cannot see.
"""

from ._config import ScanArgs as ScanArgs
from ._config import ScannerSettings as ScannerSettings
from ._manifest import StaticManifest as StaticManifest
from ._plugin import Scanner as Scanner
from ._plugin import refusal_reason as refusal_reason
from ._rules import RULES as RULES
from ._rules import SEVERITIES as SEVERITIES
from ._rules import Rule as Rule
from ._scan import ENGINE as ENGINE
from ._scan import Engine as Engine
from ._scan import Finding as Finding
from ._scan import ScanError as ScanError
from ._scan import ScanReport as ScanReport

__all__ = [
    "ENGINE",
    "RULES",
    "SEVERITIES",
    "Engine",
    "Finding",
    "Rule",
    "ScanArgs",
    "ScanError",
    "ScanReport",
    "Scanner",
    "ScannerSettings",
    "StaticManifest",
    "refusal_reason",
]
