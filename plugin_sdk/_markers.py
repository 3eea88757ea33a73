"""Hook markers: ``hookspec`` declares an extension point, ``hookimpl`` implements one.

A spec decorated with :func:`hookspec` becomes a typed *handle*
(:class:`SyncHookSpec`, :class:`FirstResultHookSpec`, :class:`AsyncHookSpec`
or :class:`AsyncFirstResultHookSpec`).  The kernel calls hooks through these
handles, so mypy checks the argument names and types of every hook call
against the spec (pluggy#191) and knows the result type.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Coroutine
from typing import Any
from typing import Final
from typing import Generic
from typing import Literal
from typing import ParamSpec
from typing import TypeVar
from typing import overload

import attrs
import pluggy

#: The pluggy project name: markers are stored as ``orion_spec`` / ``orion_impl``.
PROJECT: Final = "orion"

_pluggy_spec: Final = pluggy.HookspecMarker(PROJECT)
_pluggy_impl: Final = pluggy.HookimplMarker(PROJECT)

Policy = Literal["fail_fast", "isolate", "collect"]
Participants = Literal["running", "loaded"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@attrs.frozen
class SpecOptions:
    """What a hookspec declares about how it is called."""

    #: the hook's name (the spec function's name)
    name: str
    #: ``async def`` spec: impls must be coroutine functions and the call is awaited
    is_async: bool
    #: stop at the first impl that returns something other than ``None``
    firstresult: bool
    #: what a failing impl does to the call: ``fail_fast`` raises at once;
    #: ``isolate`` records it against the plugin, skips it and runs the others;
    #: ``collect`` runs every impl and raises one ``ExceptionGroup`` at the end
    policy: Policy
    #: the default deadline in seconds for one whole call (``None``: no deadline);
    #: operators override it with ``kernel.hook_timeouts``
    timeout: float | None
    #: async hooks only: run the impls concurrently instead of in hook order
    concurrent: bool
    #: which plugins take part: ``running`` ones (the default) or every
    #: ``loaded`` one, for hooks called before anything starts (CLI commands)
    participants: Participants
    #: the spec's argument names, in order
    argnames: tuple[str, ...]
    #: implementing it needs the operator's grant ``hook:<name>`` (``authorize``, ...)
    sensitive: bool = False


class HookSpec(Generic[P, T]):
    """A typed handle on a hook specification.  Made by :func:`hookspec`.

    ``P`` is the spec's parameters and ``T`` what a call returns, so that
    ``kernel.hooks.call(spec, **kwargs)`` is one plain generic signature and
    mypy reports a wrong argument name as ``[call-arg]`` and a wrong type as
    ``[arg-type]``.
    """

    def __init__(self, function: Callable[..., Any], options: SpecOptions) -> None:
        self.function: Final = function
        self.options: Final = options
        # help() and the docs show the hook's own docstring, not the handle class's.
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    @property
    def name(self) -> str:
        """The hook's name."""
        return self.options.name

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"<{kind} {self.options.name}({', '.join(self.options.argnames)})>"


class SyncHookSpec(HookSpec[P, list[R]], Generic[P, R]):
    """A sync hook whose call returns the list of non-``None`` results."""


class FirstResultHookSpec(HookSpec[P, R | None], Generic[P, R]):
    """A sync hook whose call returns the first non-``None`` result, or ``None``."""


class AsyncHookSpec(HookSpec[P, Awaitable[list[R]]], Generic[P, R]):
    """An async hook whose awaited call returns the list of non-``None`` results."""


class AsyncFirstResultHookSpec(HookSpec[P, Awaitable[R | None]], Generic[P, R]):
    """An async hook whose awaited call returns the first non-``None`` result, or ``None``."""


_POLICIES: Final = ("fail_fast", "isolate", "collect")


class _SpecDecorator:
    __slots__ = ("_opts",)

    def __init__(self, **opts: Any) -> None:
        self._opts = opts

    def _make(self, fn: Callable[..., Any]) -> HookSpec[Any, Any]:
        opts = self._opts
        is_async = inspect.iscoroutinefunction(fn)
        if opts["concurrent"] and not is_async:
            raise TypeError(f"hookspec {fn.__name__!r}: concurrent=True needs an async def spec")
        if opts["concurrent"] and opts["firstresult"]:
            raise TypeError(f"hookspec {fn.__name__!r}: concurrent and firstresult exclude each other")
        if opts["policy"] not in _POLICIES:
            raise ValueError(f"hookspec {fn.__name__!r}: policy must be one of {_POLICIES}")
        timeout = opts["timeout"]
        if timeout is not None and not timeout > 0:
            raise ValueError(f"hookspec {fn.__name__!r}: timeout must be > 0 or None")
        params = inspect.signature(fn).parameters
        options = SpecOptions(
            name=fn.__name__,
            is_async=is_async,
            firstresult=opts["firstresult"],
            policy=opts["policy"],
            timeout=None if timeout is None else float(timeout),
            concurrent=opts["concurrent"],
            participants=opts["participants"],
            argnames=tuple(name for name in params if name != "self"),
            sensitive=bool(opts["sensitive"]),
        )
        _pluggy_spec(firstresult=options.firstresult)(fn)
        cls: type[HookSpec[Any, Any]]
        if is_async:
            cls = AsyncFirstResultHookSpec if options.firstresult else AsyncHookSpec
        else:
            cls = FirstResultHookSpec if options.firstresult else SyncHookSpec
        return cls(fn, options)


class _CollectDecorator(_SpecDecorator):
    __slots__ = ()

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> AsyncHookSpec[P, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: Callable[P, R]) -> SyncHookSpec[P, R]: ...
    def __call__(self, fn: Callable[..., Any]) -> HookSpec[Any, Any]:
        return self._make(fn)


class _FirstResultDecorator(_SpecDecorator):
    __slots__ = ()

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R | None]]
    ) -> AsyncFirstResultHookSpec[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R | None]) -> FirstResultHookSpec[P, R]: ...
    def __call__(self, fn: Callable[..., Any]) -> HookSpec[Any, Any]:
        return self._make(fn)


@overload
def hookspec(
    *,
    firstresult: Literal[False] = False,
    policy: Policy = "isolate",
    timeout: float | None = None,
    concurrent: bool = False,
    participants: Participants = "running",
    sensitive: bool = False,
) -> _CollectDecorator: ...
@overload
def hookspec(
    *,
    firstresult: Literal[True],
    policy: Policy = "isolate",
    timeout: float | None = None,
    concurrent: bool = False,
    participants: Participants = "running",
    sensitive: bool = False,
) -> _FirstResultDecorator: ...
def hookspec(
    *,
    firstresult: bool = False,
    policy: Policy = "isolate",
    timeout: float | None = None,
    concurrent: bool = False,
    participants: Participants = "running",
    sensitive: bool = False,
) -> _SpecDecorator:
    """Declare a hook.  Use on a module-level function whose body is only a docstring.

    :param firstresult: the call returns the first non-``None`` result instead of a list.
    :param policy: ``fail_fast``, ``isolate`` (default) or ``collect``; see
        :class:`SpecOptions`.
    :param timeout: default deadline in seconds for one whole call, or ``None``.
    :param concurrent: async hooks only; run the impls concurrently.
    :param participants: ``running`` (default) or ``loaded`` plugins take part.
    :param sensitive: only plugins granted ``hook:<name>`` may implement it; a
        plugin that implements it without the grant does not start.

    The decorated name becomes a typed handle: ``kernel.hooks.call(spec, **kwargs)``
    is checked by mypy against the spec's signature.
    """
    cls = _FirstResultDecorator if firstresult else _CollectDecorator
    return cls(
        firstresult=firstresult,
        policy=policy,
        timeout=timeout,
        concurrent=concurrent,
        participants=participants,
        sensitive=sensitive,
    )


@overload
def hookimpl(function: F, /) -> F: ...
@overload
def hookimpl(*, specname: str | None = None, optional: bool = False) -> Callable[[F], F]: ...
def hookimpl(
    function: F | None = None,
    /,
    *,
    specname: str | None = None,
    optional: bool = False,
) -> F | Callable[[F], F]:
    """Mark a plugin method as the implementation of the hook of the same name.

    :param specname: implement the hook of this name instead of the method's name.
    :param optional: do not fail when no spec of this name is known (a hook of
        an optional plugin that may not be installed).

    Order between plugins is not set here but in the manifest (``priority``,
    ``before``, ``after``) and in config, so operators can change it.
    """
    marker = _pluggy_impl(specname=specname, optionalhook=optional)
    if function is not None:
        return marker(function)
    return marker


def spec_handles(namespace: object) -> list[HookSpec[Any, Any]]:
    """Every hookspec handle defined on a module or class, sorted by name."""
    found = [value for value in vars(namespace).values() if isinstance(value, HookSpec)]
    return sorted(found, key=lambda spec: spec.name)
