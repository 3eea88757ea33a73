"""The kernel's cattrs converter and the flattening of its errors into path-named issues.

cattrs' default structuring is lenient (``int("5")``, a string iterated into a
tuple of characters); config must not be, so the converter owned here checks
primitive and container types strictly and says what it expected and what it
got.  Errors come back as :class:`~plugin_sdk.ConfigIssue` with dotted paths
(``plugins.cache.settings.max_entries``) and a did-you-mean for unknown keys.
"""

from __future__ import annotations

import difflib
import enum
import functools
import re
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from typing import Final
from typing import Literal
from typing import NewType
from typing import get_args
from typing import get_origin

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory
from cattrs.cols import is_mapping
from cattrs.cols import is_sequence
from cattrs.cols import list_structure_factory
from cattrs.cols import mapping_structure_factory
from cattrs.errors import ClassValidationError
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.errors import IterableValidationError

from plugin_sdk import ConfigIssue

_IDENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class Mismatch(TypeError):
    """A value of the wrong type; the message is the whole explanation."""


class Invalid(ValueError):
    """A validator's verdict on one field (or on ``subpath`` below the field)."""

    def __init__(self, message: str, *, subpath: str = "") -> None:
        super().__init__(message)
        self.subpath = subpath


#: A float that must be > 0 (checked while structuring, so every bad field is reported).
PositiveFloat = NewType("PositiveFloat", float)
#: An int that must be >= 0.
NonNegativeInt = NewType("NonNegativeInt", int)
#: An int that must be > 0.
PositiveInt = NewType("PositiveInt", int)

#: constrained type -> (base type, JSON Schema keywords)
CONSTRAINED: Final[dict[Any, tuple[type, dict[str, Any]]]] = {
    PositiveFloat: (float, {"exclusiveMinimum": 0}),
    NonNegativeInt: (int, {"minimum": 0}),
    PositiveInt: (int, {"exclusiveMinimum": 0}),
}


def describe(value: object) -> str:
    """A short, safe description of a config value for an error message."""
    if isinstance(value, str | int | float | bool) or value is None:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _strict(kind: type, accept: tuple[type, ...], convert: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if isinstance(value, bool) and bool not in accept:
            raise Mismatch(f"expected {kind.__name__}, got {describe(value)}")
        if not isinstance(value, accept):
            raise Mismatch(f"expected {kind.__name__}, got {describe(value)}")
        return convert(value)

    return hook


def _bounded(base: Callable[[Any, Any], Any], low: float, *, strict: bool) -> Callable[[Any, Any], Any]:
    def hook(value: Any, kind: Any) -> Any:
        number = base(value, kind)
        if not (number > low if strict else number >= low):  # also refuses NaN
            raise Invalid(f"must be {'>' if strict else '>='} {low}, got {number!r}")
        return number

    return hook


def _checked(inner: Callable[[Any, Any], Any], accept: tuple[type, ...], what: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, kind: Any) -> Any:
        if not isinstance(value, accept):
            raise Mismatch(f"expected {what}, got {describe(value)}")
        return inner(value, kind)

    return hook


def _is_homogeneous_tuple(kind: Any) -> bool:
    args = get_args(kind)
    return get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis


@functools.cache
def shared_converter() -> cattrs.Converter:
    """The kernel's converter, built on first use (never at import)."""
    return make_converter()


def make_converter() -> cattrs.Converter:
    """A strict converter: extra keys forbidden, no silent coercions."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(int, _strict(int, (int,), int))
    converter.register_structure_hook(float, _strict(float, (int, float), float))
    converter.register_structure_hook(str, _strict(str, (str,), str))
    converter.register_structure_hook(bool, _strict(bool, (bool,), bool))
    converter.register_structure_hook(PositiveFloat, _bounded(_strict(float, (int, float), float), 0, strict=True))
    converter.register_structure_hook(NonNegativeInt, _bounded(_strict(int, (int,), int), 0, strict=False))
    converter.register_structure_hook(PositiveInt, _bounded(_strict(int, (int,), int), 0, strict=True))
    converter.register_structure_hook_factory(_is_list, _list_hook)
    converter.register_structure_hook_factory(_is_homogeneous_tuple, _tuple_hook)
    converter.register_structure_hook_factory(is_mapping, _mapping_hook)
    converter.register_structure_hook_factory(attrs.has, _attrs_hook)
    return converter


def _is_list(kind: Any) -> bool:
    return bool(is_sequence(kind)) and get_origin(kind) is list


def _list_hook(kind: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return _checked(list_structure_factory(kind, conv), (list, tuple), "a list")


def _tuple_hook(kind: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return _checked(homogenous_tuple_structure_factory(kind, conv), (list, tuple), "a list")


def _mapping_hook(kind: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return _checked(mapping_structure_factory(kind, conv), (Mapping,), "a table")


def _attrs_hook(kind: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return _checked(conv.gen_structure_attrs_fromdict(kind), (Mapping,), f"a table of {kind.__name__} settings")


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if _IDENT.match(text):
        return f"{path}.{text}" if path else text
    return f"{path}[{text!r}]"


def _message(exc: BaseException, kind: Any) -> str:
    if isinstance(exc, Mismatch):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required key is missing"
    if get_origin(kind) is Literal:
        return f"expected one of {list(get_args(kind))}"
    if isinstance(exc, ValueError) and isinstance(kind, type) and issubclass(kind, enum.Enum):
        return f"expected one of {[m.value for m in kind]}"
    if kind is not None and str(exc).startswith(("invalid value", "Unsupported")):
        return f"expected {_type_name(kind)}"
    return _text(exc) or type(exc).__name__


def _extra(exc: ForbiddenExtraKeysError, path: str) -> Iterator[ConfigIssue]:
    known = [a.alias or a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
    for key in sorted(map(str, exc.extra_fields)):
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known) or 'none'})"
        yield ConfigIssue(_join(path, key), f"unknown key{hint}")


_FIELD_IN_MESSAGE: Final = re.compile(r"^'([A-Za-z_][A-Za-z0-9_]*)' ")


def _text(exc: BaseException) -> str:
    # attrs validators raise ValueError(message, attribute, expected, value): the message is args[0].
    if len(exc.args) > 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def _named_field(exc: BaseException, cls: type) -> str | None:
    match = _FIELD_IN_MESSAGE.match(_text(exc))
    if match is None or not attrs.has(cls):
        return None
    names = {a.alias or a.name for a in attrs.fields(cls)}
    return match.group(1) if match.group(1) in names else None


def issues_of(exc: BaseException, path: str = "") -> list[ConfigIssue]:
    """Flatten a (cattrs) structuring exception into issues with dotted paths."""
    return list(_walk(exc, path, None))


def _walk(exc: BaseException, path: str, kind: Any) -> Iterator[ConfigIssue]:
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            yield from _walk(sub, _join(path, note.name), note.type)
        for sub in without:
            # A validator in __init__ (attrs style: "'max_entries' must be > 0: -1"):
            # put it at the field it names.
            field = _named_field(sub, exc.cl)
            yield from _walk(sub, _join(path, field) if field else path, None)
    elif isinstance(exc, IterableValidationError):
        with_notes_i, without = exc.group_exceptions()
        for sub, inote in with_notes_i:
            yield from _walk(sub, _join(path, inote.index), inote.type)
        for sub in without:
            yield from _walk(sub, path, None)
    elif isinstance(exc, Invalid):
        yield ConfigIssue(_join(path, exc.subpath) if exc.subpath else path, str(exc))
    elif isinstance(exc, ForbiddenExtraKeysError):
        yield from _extra(exc, path)
    elif isinstance(exc, BaseExceptionGroup):
        for child in exc.exceptions:
            yield from _walk(child, path, kind)
    else:
        yield ConfigIssue(path, _message(exc, kind))
