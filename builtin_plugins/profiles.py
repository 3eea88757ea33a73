"""Named configuration profiles shipped with the builtin plugins.

``orion-kernel`` uses the ``default`` profile when no config file exists
(registered under the ``orion_kernel.profiles`` entry points of this
distribution), so ``orion-kernel run`` on a bare machine serves metrics,
health and the dashboard on 127.0.0.1 without the kernel naming any plugin.
A config file replaces the profile entirely: list what you want in it.
"""

from __future__ import annotations

from typing import Any
from typing import Final

#: The embedded defaults: HTTP on 127.0.0.1:8470 with metrics, health and the dashboard.
DEFAULT: Final[dict[str, Any]] = {
    "plugins": {
        "http": {
            "enabled": True,
            # the http plugin asks for net:listen:{host}:{port}; the profile grants loopback only
            "permissions": ["net:listen:127.0.0.1:*"],
            "settings": {"host": "127.0.0.1", "port": 8470},
        },
        "metrics": {"enabled": True},
        "health": {"enabled": True},
        "dashboard": {"enabled": True},
    }
}
