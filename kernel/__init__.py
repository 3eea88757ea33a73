"""Orion Kernel: lifecycle, hook dispatch and sandboxing for agent applications.

Importing this package does nothing but define names: no registry, no
discovery, no plugin import happens until a :class:`Kernel` is created and
entered.
"""

from ._config import DEFAULT_CONFIG_FILE as DEFAULT_CONFIG_FILE
from ._config import KernelSettings as KernelSettings
from ._config import OrionConfig as OrionConfig
from ._config import PluginEntry as PluginEntry
from ._config import ProcessSettings as ProcessSettings
from ._config import SandboxSettings as SandboxSettings
from ._config import load_config as load_config
from ._discovery import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from ._dispatch import HookRelay as HookRelay
from ._invoke import Operation as Operation
from ._kernel import BlockingKernel as BlockingKernel
from ._kernel import Kernel as Kernel
from ._kernel import PluginInfo as PluginInfo
from ._kernel import ReloadError as ReloadError
from ._kernel import ReloadReport as ReloadReport

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENTRY_POINT_GROUP",
    "BlockingKernel",
    "HookRelay",
    "Kernel",
    "KernelSettings",
    "Operation",
    "OrionConfig",
    "PluginEntry",
    "PluginInfo",
    "ProcessSettings",
    "ReloadError",
    "ReloadReport",
    "SandboxSettings",
    "load_config",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("kernel._"):
        _obj.__module__ = __name__
del _name, _obj
