"""The security family: auth, rbac, audit, crypto, secrets and the plugin scanner.

Each is a plugin written against ``plugin_sdk`` only, behind an SDK service
Protocol (``Authenticator``, ``Authorizer``, ``AuditLog``, ``Encryptor``,
``SecretStore``) so that a third party can replace any of them, and each
takes its place in the invoke pipeline as middleware.
"""
