"""Secrets: named secrets in one AES-256-GCM encrypted file, one namespace per consuming plugin.

Enable with ``[plugins.secrets] enabled = true`` and a master key (the
``ORION_SECRETS_KEY`` environment variable, or ``master_key_file``).  Plugins
use the ``secrets`` service (``optional = ("secrets",)``); operators use
``orion-kernel secrets set|get|list|delete|keygen``.  See docs/security/secrets.md.
"""

from ._config import SecretsSettings as SecretsSettings
from ._plugin import Secrets as Secrets
from ._plugin import SecretsView as SecretsView
from ._store import InvalidSecretName as InvalidSecretName
from ._store import MasterKeyError as MasterKeyError
from ._store import check_name as check_name

__all__ = ["InvalidSecretName", "MasterKeyError", "Secrets", "SecretsSettings", "SecretsView", "check_name"]
