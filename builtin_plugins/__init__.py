"""First-party plugins of Orion Kernel, one sub-package per family.

Each one is written against :mod:`plugin_sdk` only and registered through the
``orion_kernel.plugins`` entry points of this distribution, the same door a
third-party plugin uses.  Families arrive with their issues (monitoring,
security, performance, communication, gateway).
"""
