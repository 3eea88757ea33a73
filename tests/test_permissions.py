"""The permission grammar: parsing, printing, and which grant covers which ask."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin_sdk import Permission
from plugin_sdk import Permissions
from plugin_sdk import PermissionSyntaxError
from plugin_sdk import Ports
from plugin_sdk import parse_permission
from plugin_sdk._permissions import EXAMPLES
from plugin_sdk._permissions import expand
from plugin_sdk._permissions import path_covers
from plugin_sdk._permissions import placeholders


@pytest.mark.parametrize("text", EXAMPLES)
def test_every_documented_example_parses_and_prints_back(text: str) -> None:
    assert str(parse_permission(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("service:metrics", Permission("service", "", "metrics")),
        ("fs:read:/etc/ssl/", Permission("fs", "read", "/etc/ssl")),
        ("fs:write:/srv/app/**", Permission("fs", "write", "/srv/app/**")),
        ("net:connect:API.Example.com:443", Permission("net", "connect", "api.example.com", Ports(443, 443))),
        ("net:listen:[::1]:*", Permission("net", "listen", "[::1]", Ports(0, 65535))),
        ("net:connect:*:8000-8099", Permission("net", "connect", "*", Ports(8000, 8099))),
        ("subprocess", Permission("subprocess")),
        ("secrets:db_*", Permission("secrets", "", "db_*")),
        ("hook:authorize", Permission("hook", "", "authorize")),
    ],
)
def test_parse(text: str, expected: Permission) -> None:
    assert parse_permission(text) == expected


def test_home_is_expanded_in_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ada")
    assert parse_permission("fs:read:~/.config/app") == Permission("fs", "read", "/home/ada/.config/app")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        (" subprocess", "white space"),
        ("files:read:/x", "unknown kind 'files'"),
        ("net:connect:*:65536", "outside 0-65535"),
        ("net:connect:*:9-1", "reversed"),
        ("net:connect::80", "needs HOST:PORT"),
        ("net:connect:ho/st:80", "not a host name"),
        ("fs:write:/a/./b", "'.' or '..' segments"),
        ("fs:read:/a\x00b", "NUL byte"),
        ("service:", "needs a name"),
        ("secrets:a/b", "not a name or a glob of names"),
    ],
)
def test_bad_permissions_say_why(text: str, reason: str) -> None:
    with pytest.raises(PermissionSyntaxError) as caught:
        parse_permission(text)
    assert reason in caught.value.reason
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("grant", "ask", "covered"),
    [
        ("fs:read:/srv", "fs:read:/srv/app/config.toml", True),
        ("fs:read:/srv", "fs:read:/srv", True),
        ("fs:read:/srv", "fs:read:/srvx", False),
        ("fs:read:/srv/**", "fs:read:/srv/a/b", True),
        ("fs:read:/srv/*.toml", "fs:read:/srv/a.toml", True),
        ("fs:read:/srv/*.toml", "fs:read:/srv/a/b.toml", False),
        ("fs:read:/srv/**/*.toml", "fs:read:/srv/a/b.toml", True),
        ("fs:write:/srv", "fs:read:/srv/a", True),
        ("fs:read:/srv", "fs:write:/srv/a", False),
        ("fs:read:/", "fs:read:/anything/at/all", True),
        ("net:connect:*:443", "net:connect:api.example.com:443", True),
        ("net:connect:api.example.com:443", "net:connect:*:443", False),
        ("net:connect:*.example.com:*", "net:connect:api.example.com:8443", True),
        ("net:connect:*:8000-8099", "net:connect:h:8000-8010", True),
        ("net:connect:*:8000-8099", "net:connect:h:*", False),
        ("net:connect:*:*", "net:listen:h:80", False),
        ("secrets:db_*", "secrets:db_password", True),
        ("secrets:db_*", "secrets:api_key", False),
        ("service:*", "service:metrics", True),
        ("subprocess", "subprocess", True),
        ("hook:authorize", "hook:authenticate", False),
        ("hook:*", "subprocess", False),
    ],
)
def test_which_grant_covers_which_ask(grant: str, ask: str, covered: bool) -> None:
    assert parse_permission(grant).covers(parse_permission(ask)) is covered


def test_permissions_answer_concrete_accesses() -> None:
    held = Permissions.parse(["fs:read:/etc/ssl", "fs:write:/tmp/app", "net:connect:db.local:5432", "subprocess"])
    assert held.allows_path("/etc/ssl/certs/ca.pem")
    assert not held.allows_path("/etc/ssl/certs/ca.pem", write=True)
    assert held.allows_path("/tmp/app/x", write=True)
    assert not held.allows_path("/etc/passwd")
    assert held.allows_connect("DB.local", 5432)
    assert not held.allows_connect("db.local", 5433)
    assert not held.allows_connect("db.local", 5432, listen=True)
    assert held.allows("subprocess")
    assert not held.allows("secrets:x")
    assert [str(p) for p in held.missing([parse_permission("secrets:x"), parse_permission("subprocess")])] == [
        "secrets:x"
    ]
    assert str(Permissions()) == "(none)"
    assert len(held) == 4


def test_placeholders_are_found_and_filled() -> None:
    assert placeholders("net:listen:{host}:{port}") == ["host", "port"]
    assert expand("net:listen:{host}:{port}", {"host": "127.0.0.1", "port": 8470}) == ["net:listen:127.0.0.1:8470"]
    with pytest.raises(KeyError, match="port"):
        expand("net:listen:{host}:{port}", {"host": "h"})


def test_an_unset_setting_asks_for_nothing_and_paths_are_resolved_against_the_data_dir() -> None:
    data = "/srv/orion/audit"
    assert expand("fs:read:{key}", {"key": None}, data) == []
    assert expand("fs:read:{key}", {"key": ""}, data) == []
    assert expand("fs:read:{key}", {"key": "/etc/orion/k"}, data) == ["fs:read:/etc/orion/k"]
    assert expand("fs:read:{key}", {"key": "keys/k"}, data) == ["fs:read:/srv/orion/audit/keys/k"]
    assert expand("fs:write:{log:dir}", {"log": "/var/log/orion/audit.log"}, data) == ["fs:write:/var/log/orion"]
    assert expand("fs:write:{log:dir}", {"log": "audit.log"}, data) == ["fs:write:/srv/orion/audit"]
    assert expand("fs:write:{log}*", {"log": "a.log"}, data) == ["fs:write:/srv/orion/audit/a.log*"]
    # only a placeholder that starts an fs: path is a path
    assert expand("net:connect:{host}:443", {"host": "api"}, data) == ["net:connect:api:443"]
    assert expand("fs:read:/etc/{name}", {"name": "x"}, data) == ["fs:read:/etc/x"]
    with pytest.raises(PermissionSyntaxError, match="':dir' needs an fs: path"):
        expand("net:connect:{host:dir}:443", {"host": "api"}, data)
    with pytest.raises(PermissionSyntaxError, match="unknown placeholder modifier"):
        expand("fs:read:{key:parent}", {"key": "/k"}, data)
    assert placeholders("fs:write:{log:dir}") == ["log"]


@attrs.frozen
class _Key:
    kid: str
    key_file: str | None = None


def test_a_dotted_placeholder_walks_nested_settings_and_asks_once_per_element() -> None:
    data = "/srv/orion/auth"
    keys = (_Key("a", "/etc/orion/a.pem"), _Key("b"), _Key("c", "c.pem"), _Key("d", "/etc/orion/a.pem"))
    # unset elements ask nothing, relative ones are under the data dir, duplicates ask once
    assert expand("fs:read:{jwt_keys.key_file}", {"jwt_keys": keys}, data) == [
        "fs:read:/etc/orion/a.pem",
        "fs:read:/srv/orion/auth/c.pem",
    ]
    assert expand("fs:read:{jwt_keys.key_file}", {"jwt_keys": ()}, data) == []
    assert placeholders("fs:read:{jwt_keys.key_file:dir}") == ["jwt_keys"]
    # plain data (an isolated plugin's settings) walks the same way
    upstreams = [{"host": "a", "port": 1}, {"host": "b", "port": 2}]
    # placeholders that walk the same list take the same element ...
    assert expand("net:connect:{up.host}:{up.port}", {"up": upstreams}) == ["net:connect:a:1", "net:connect:b:2"]
    # ... different lists multiply, and a list at the end asks once per element
    assert expand("net:connect:{hosts}:{ports}", {"hosts": ["a", "b"], "ports": (1, 2)}) == [
        "net:connect:a:1",
        "net:connect:a:2",
        "net:connect:b:1",
        "net:connect:b:2",
    ]
    # an unset optional structure on the way asks nothing
    assert expand("fs:read:{tls.cert}", {"tls": None}, data) == []
    with pytest.raises(KeyError, match=r"jwt_keys\.path"):
        expand("fs:read:{jwt_keys.path}", {"jwt_keys": keys}, data)
    with pytest.raises(KeyError, match=r"up\.name"):
        expand("net:connect:{up.name}:1", {"up": upstreams})
    with pytest.raises(PermissionSyntaxError, match=r"\{jwt_keys\} holds a _Key, not a value"):
        expand("fs:read:{jwt_keys}", {"jwt_keys": keys}, data)


segment = st.text(alphabet="abcxyz019_-", min_size=1, max_size=6)
paths = st.lists(segment, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))


@given(paths)
def test_every_permission_covers_itself(path: str) -> None:
    for text in (f"fs:read:{path}", f"fs:write:{path}", f"secrets:{path[1:].replace('/', '_')}"):
        permission = parse_permission(text)
        assert permission.covers(permission)


@given(paths, st.lists(segment, max_size=3))
def test_a_directory_grant_covers_everything_below_it_and_nothing_beside_it(base: str, below: list[str]) -> None:
    child = "/".join([base, *below])
    assert path_covers(base, child)
    assert path_covers(base + "/**", child)
    assert not path_covers(base, base + "x")


def test_the_root_glob_covers_every_path() -> None:
    root = parse_permission("fs:read:/**")
    assert str(root) == "fs:read:/**"
    assert root.covers(parse_permission("fs:read:/etc/hostname"))
    assert root.covers(parse_permission("fs:read:/srv/**"))
    assert not root.covers(parse_permission("fs:write:/tmp/x"))
