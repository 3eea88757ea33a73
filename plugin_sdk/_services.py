"""Service Protocols: what a plugin may rely on when it asks for a service by name.

A third party replaces a builtin by providing the same service name with an
object that satisfies the same Protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Final
from typing import Literal
from typing import Protocol
from typing import runtime_checkable

import attrs

from ._errors import OrionError
from ._permissions import Permissions
from ._security import AuditLog
from ._security import Authenticator
from ._security import Authorizer
from ._security import Encryptor
from ._security import SecretStore

if TYPE_CHECKING:
    from .hookspecs import AlertEvent

MetricKind = Literal["counter", "gauge", "histogram"]


class MetricsError(OrionError):
    """A metric was declared or used wrongly: a bad name, a clash, or too many label values."""


@attrs.frozen
class Sample:
    """One value of one series: ``name{labels} value``."""

    #: the sample's name (for histograms: ``x_bucket``, ``x_sum``, ``x_count``)
    name: str
    labels: Mapping[str, str]
    value: float


@attrs.frozen
class MetricFamily:
    """One metric with all its series, as ``MetricsRegistry.collect()`` returns it."""

    name: str
    kind: MetricKind
    help: str
    samples: tuple[Sample, ...]


@runtime_checkable
class Counter(Protocol):
    """A value that only goes up."""

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the series of ``labels``."""


@runtime_checkable
class Gauge(Protocol):
    """A value that goes up and down."""

    def set(self, value: float, **labels: str) -> None:
        """Set the series of ``labels`` to ``value``."""

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the series of ``labels``."""

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        """Subtract ``amount`` from the series of ``labels``."""


@runtime_checkable
class Histogram(Protocol):
    """Observations counted into buckets (with their sum and count)."""

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation in the series of ``labels``."""


@runtime_checkable
class MetricsRegistry(Protocol):
    """The ``metrics`` service: declare metrics, and read every series back.

    Declaring the same name twice with the same kind and labels returns the
    same metric; anything else raises :class:`MetricsError`, as does a label
    set that does not match the declaration or a metric that would exceed
    its label-cardinality limit.
    """

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        """Declare (or get) a counter."""

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        """Declare (or get) a gauge."""

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] | None = None
    ) -> Histogram:
        """Declare (or get) a histogram (default buckets suit latencies in seconds)."""

    def collect(self) -> list[MetricFamily]:
        """Every metric with its current series, sorted by name."""


attrs.resolve_types(Sample)
attrs.resolve_types(MetricFamily)


@runtime_checkable
class AlertStatus(Protocol):
    """The ``alerts`` service: what is firing now (for dashboards and health)."""

    def active(self) -> list[AlertEvent]:
        """Alerts currently firing (silenced ones included), oldest first."""


@runtime_checkable
class HttpService(Protocol):
    """The ``http`` service: where the kernel's HTTP server listens."""

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (the real port when configured as 0)."""

    def mounts(self) -> dict[str, str]:
        """Mounted prefix -> the plugin serving it."""


#: Well-known service names and the Protocol a provider of each must satisfy (the
#: conformance suite's ``services.protocols`` check holds providers to it).  A plugin
#: replacing a builtin provides the same name with an object satisfying the same Protocol.
SERVICE_PROTOCOLS: Final[Mapping[str, type]] = {
    "metrics": MetricsRegistry,
    "alerts": AlertStatus,
    "http": HttpService,
    "authenticator": Authenticator,
    "authorizer": Authorizer,
    "audit": AuditLog,
    "encryptor": Encryptor,
    "secrets": SecretStore,
}


@attrs.frozen
class Consumer:
    """Who asks for a service that is provided :class:`PerConsumer`."""

    #: the consuming plugin's name
    name: str
    #: its effective permissions (``secrets:NAME`` grants, ...)
    permissions: Permissions


@attrs.frozen
class PerConsumer:
    """Provide a service whose object depends on who asks for it (OSGi's ServiceFactory).

    ``ctx.provide("secrets", PerConsumer(self.view_for))``: the kernel calls
    ``factory(Consumer(...))`` the first time each plugin asks for the service
    and hands that plugin the result, so a provider can hold every consumer to
    its own grants.  The object is kept until either plugin stops.
    """

    factory: Callable[[Consumer], object]


attrs.resolve_types(Consumer)
attrs.resolve_types(PerConsumer)
