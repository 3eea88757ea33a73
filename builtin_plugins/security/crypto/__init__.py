"""Crypto: AES-256-GCM envelope encryption and Fernet tokens under a rotating keyring.

Enable with ``[plugins.crypto] enabled = true`` (with the ``secrets`` plugin to
keep the keyring encrypted at rest).  Plugins use the ``encryptor`` service
(``plugin_sdk.Encryptor``); operators rotate with ``orion-kernel keys rotate``.
See docs/security/crypto.md.
"""

from ._config import CryptoSettings as CryptoSettings
from ._keyring import OVERHEAD as OVERHEAD
from ._keyring import KeyEntry as KeyEntry
from ._keyring import Keyring as Keyring
from ._keyring import KeyringCipher as KeyringCipher
from ._keyring import KeyringFormatError as KeyringFormatError
from ._plugin import KEYRING_SECRET as KEYRING_SECRET
from ._plugin import Crypto as Crypto

__all__ = [
    "KEYRING_SECRET",
    "OVERHEAD",
    "Crypto",
    "CryptoSettings",
    "KeyEntry",
    "Keyring",
    "KeyringCipher",
    "KeyringFormatError",
]
