"""Role-based access control: roles, wildcard permissions, inheritance, deny wins.

Enable with ``[plugins.rbac] enabled = true`` and a policy in
``[plugins.rbac.settings]``.  The plugin provides the ``authorizer`` service
(``plugin_sdk.Authorizer``), authorizes every ``kernel.invoke`` as the action
``invoke:<operation>`` at ``Phase.AUTHORIZE`` (policy, then the
``authorize`` hook), and explains its decisions with ``rbac.explain`` and
``orion-kernel rbac check``.  See docs/security/rbac.md.
"""

from ._cli import rbac_command as rbac_command
from ._config import RbacSettings as RbacSettings
from ._config import RoleSettings as RoleSettings
from ._load import build_policy as build_policy
from ._load import read_policy_file as read_policy_file
from ._plugin import RELOADED as RELOADED
from ._plugin import ExplainArgs as ExplainArgs
from ._plugin import Rbac as Rbac
from ._plugin import RbacAuthorizer as RbacAuthorizer
from ._plugin import denial_message as denial_message
from ._policy import Binding as Binding
from ._policy import Explanation as Explanation
from ._policy import Pattern as Pattern
from ._policy import PatternError as PatternError
from ._policy import Policy as Policy
from ._policy import RoleDef as RoleDef
from ._policy import normalize_action as normalize_action
from ._policy import parse_pattern as parse_pattern

__all__ = [
    "RELOADED",
    "Binding",
    "ExplainArgs",
    "Explanation",
    "Pattern",
    "PatternError",
    "Policy",
    "Rbac",
    "RbacAuthorizer",
    "RbacSettings",
    "RoleDef",
    "RoleSettings",
    "build_policy",
    "denial_message",
    "normalize_action",
    "parse_pattern",
    "rbac_command",
    "read_policy_file",
]
