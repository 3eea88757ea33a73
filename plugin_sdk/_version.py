"""The SDK's own version: plugins declare the range they support in ``sdk``."""

from typing import Final

__version__: Final = "1.0.0"
