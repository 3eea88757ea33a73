"""Authentication: who is calling.

Enable with ``[plugins.auth] enabled = true``.  The plugin's middleware turns
the credentials an invoke carries (an API key or a bearer JWT) into
``inv.principal``; API keys are stored only as keyed hashes; JWTs are HS256 or
EdDSA, with key ids for rotation.  Provides the ``authenticator`` service;
``orion-kernel auth`` manages keys and issues tokens.  See docs/security/auth.md.
"""

from ._config import AuthSettings as AuthSettings
from ._config import JwtKeySettings as JwtKeySettings
from ._jwt import JwtKey as JwtKey
from ._jwt import Verifier as Verifier
from ._plugin import Auth as Auth

__all__ = ["Auth", "AuthSettings", "JwtKey", "JwtKeySettings", "Verifier"]
