"""The public, versioned SDK of Orion Kernel.

Plugins import only this package: builtin and third-party plugins alike.
"""

from ._cli import OPERATOR as OPERATOR
from ._cli import CliCommand as CliCommand
from ._cli import CliEnvironment as CliEnvironment
from ._cli import Invoker as Invoker
from ._cli import OperatorCall as OperatorCall
from ._cli import run_as_operator as run_as_operator
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._context import PluginContext as PluginContext
from ._errors import ConfigError as ConfigError
from ._errors import ConfigIssue as ConfigIssue
from ._errors import DependencyError as DependencyError
from ._errors import HookFailed as HookFailed
from ._errors import HookTimeout as HookTimeout
from ._errors import InvalidArguments as InvalidArguments
from ._errors import InvokeError as InvokeError
from ._errors import ManifestError as ManifestError
from ._errors import NotAuthenticated as NotAuthenticated
from ._errors import OperationFailed as OperationFailed
from ._errors import OperationNotFound as OperationNotFound
from ._errors import OrionError as OrionError
from ._errors import PermissionDenied as PermissionDenied
from ._errors import PermissionsNotGranted as PermissionsNotGranted
from ._errors import PluginCrashed as PluginCrashed
from ._errors import PluginError as PluginError
from ._errors import PluginStartError as PluginStartError
from ._errors import ServiceUnavailable as ServiceUnavailable
from ._errors import WorkerError as WorkerError
from ._files import fsync_dir as fsync_dir
from ._files import write_file_atomic as write_file_atomic
from ._hmac import HmacSha256 as HmacSha256
from ._hooks_api import HookOutcome as HookOutcome
from ._hooks_api import Hooks as Hooks
from ._http import ASGIApp as ASGIApp
from ._http import HttpMount as HttpMount
from ._http import Message as Message
from ._http import Receive as Receive
from ._http import Scope as Scope
from ._http import Send as Send
from ._introspect import KernelSnapshot as KernelSnapshot
from ._introspect import PluginSnapshot as PluginSnapshot
from ._invocation import CallNext as CallNext
from ._invocation import Handler as Handler
from ._invocation import Invocation as Invocation
from ._invocation import Middleware as Middleware
from ._invocation import Phase as Phase
from ._invocation import Principal as Principal
from ._markers import AsyncFirstResultHookSpec as AsyncFirstResultHookSpec
from ._markers import AsyncHookSpec as AsyncHookSpec
from ._markers import FirstResultHookSpec as FirstResultHookSpec
from ._markers import HookSpec as HookSpec
from ._markers import SpecOptions as SpecOptions
from ._markers import SyncHookSpec as SyncHookSpec
from ._markers import hookimpl as hookimpl
from ._markers import hookspec as hookspec
from ._observer import DispatchObserver as DispatchObserver
from ._observer import HookSampling as HookSampling
from ._observer import Outcome as Outcome
from ._permissions import Permission as Permission
from ._permissions import Permissions as Permissions
from ._permissions import PermissionSyntaxError as PermissionSyntaxError
from ._permissions import Ports as Ports
from ._permissions import parse_permission as parse_permission
from ._plugin import Manifest as Manifest
from ._plugin import NoSettings as NoSettings
from ._plugin import Plugin as Plugin
from ._plugin import PluginState as PluginState
from ._security import AuditLog as AuditLog
from ._security import AuditVerification as AuditVerification
from ._security import AuthenticationThrottled as AuthenticationThrottled
from ._security import Authenticator as Authenticator
from ._security import Authorizer as Authorizer
from ._security import Credentials as Credentials
from ._security import CryptoError as CryptoError
from ._security import Decision as Decision
from ._security import DecryptionFailed as DecryptionFailed
from ._security import Encryptor as Encryptor
from ._security import KeyNotFound as KeyNotFound
from ._security import SecretNotFound as SecretNotFound
from ._security import SecretStore as SecretStore
from ._security import record_audit as record_audit
from ._security import require_kind as require_kind
from ._services import SERVICE_PROTOCOLS as SERVICE_PROTOCOLS
from ._services import AlertStatus as AlertStatus
from ._services import Consumer as Consumer
from ._services import Counter as Counter
from ._services import Gauge as Gauge
from ._services import Histogram as Histogram
from ._services import HttpService as HttpService
from ._services import MetricFamily as MetricFamily
from ._services import MetricKind as MetricKind
from ._services import MetricsError as MetricsError
from ._services import MetricsRegistry as MetricsRegistry
from ._services import PerConsumer as PerConsumer
from ._services import Sample as Sample
from ._version import __version__ as __version__
from ._web import HttpError as HttpError
from ._web import HttpHandler as HttpHandler
from ._web import HttpRequest as HttpRequest
from ._web import HttpResponse as HttpResponse
from ._web import HttpRoutes as HttpRoutes
from ._web import mount_path as mount_path
from .hookspecs import AlertEvent as AlertEvent
from .hookspecs import HealthStatus as HealthStatus
from .hookspecs import VetVerdict as VetVerdict

__all__ = [
    "record_audit",
    "require_kind",
    "HmacSha256",
    "fsync_dir",
    "write_file_atomic",
    "OPERATOR",
    "OperatorCall",
    "run_as_operator",
    "Consumer",
    "PerConsumer",
    "AuditLog",
    "AuditVerification",
    "AuthenticationThrottled",
    "Authenticator",
    "Authorizer",
    "Credentials",
    "CryptoError",
    "Decision",
    "DecryptionFailed",
    "Encryptor",
    "KeyNotFound",
    "SecretNotFound",
    "SecretStore",
    "VetVerdict",
    "ASGIApp",
    "AlertEvent",
    "AlertStatus",
    "AsyncFirstResultHookSpec",
    "AsyncHookSpec",
    "CallNext",
    "CliCommand",
    "CliEnvironment",
    "Clock",
    "ConfigError",
    "ConfigIssue",
    "Counter",
    "DependencyError",
    "DispatchObserver",
    "FirstResultHookSpec",
    "Gauge",
    "Handler",
    "HealthStatus",
    "Histogram",
    "HookFailed",
    "HookOutcome",
    "HookSampling",
    "HookSpec",
    "HookTimeout",
    "Hooks",
    "HttpError",
    "HttpHandler",
    "HttpMount",
    "HttpRequest",
    "HttpResponse",
    "HttpRoutes",
    "HttpService",
    "InvalidArguments",
    "Invocation",
    "InvokeError",
    "Invoker",
    "KernelSnapshot",
    "Manifest",
    "Message",
    "ManifestError",
    "MetricFamily",
    "MetricKind",
    "MetricsError",
    "MetricsRegistry",
    "Middleware",
    "NoSettings",
    "NotAuthenticated",
    "OperationFailed",
    "OperationNotFound",
    "OrionError",
    "Outcome",
    "PermissionDenied",
    "PermissionSyntaxError",
    "Permission",
    "Permissions",
    "PermissionsNotGranted",
    "PluginCrashed",
    "WorkerError",
    "Ports",
    "Phase",
    "Plugin",
    "PluginContext",
    "PluginError",
    "PluginSnapshot",
    "PluginStartError",
    "PluginState",
    "Principal",
    "Receive",
    "SERVICE_PROTOCOLS",
    "Sample",
    "Scope",
    "Send",
    "ServiceUnavailable",
    "SpecOptions",
    "SyncHookSpec",
    "SystemClock",
    "__version__",
    "hookimpl",
    "hookspec",
    "parse_permission",
    "mount_path",
]

# Show public paths in reprs and tracebacks (plugin_sdk.Plugin, not plugin_sdk._plugin.Plugin).
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("plugin_sdk._"):
        _obj.__module__ = __name__
del _name, _obj
