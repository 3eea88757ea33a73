"""The scanner's rules: what each one detects, how severe it is, what permission it needs.

A *rule* names a capability (start processes, open sockets, load native
code ...).  The analyzer (:mod:`._analyzer`) resolves every call and
reference in a plugin's code to a dotted name (``subprocess.run``,
``os.system``, ``httpx.AsyncClient``, ``pathlib.Path().write_text``); the
tables here map those names to rules.  Three kinds of entries:

* exact names (``CALLS``): ``subprocess.run`` -> ``subprocess``;
* prefixes (``PREFIXES``): every name under ``os.exec`` or ``os.environ``;
* method names on a receiver the analyzer could not resolve (``METHODS``):
  ``loop.create_connection(...)``, ``some_path.write_text(...)``.

A rule's ``permission`` is written with wildcards where the scan cannot know
the target (``net:connect:*:*``, ``fs:write:/**``); a finding with a
constant absolute path narrows it (``fs:write:/etc/passwd``).
"""

from __future__ import annotations

from typing import Final
from typing import Literal

import attrs

Severity = Literal["info", "low", "medium", "high", "critical"]
#: every severity, lowest first
SEVERITIES: Final[tuple[Severity, ...]] = ("info", "low", "medium", "high", "critical")
_RANK: Final[dict[str, int]] = {name: index for index, name in enumerate(SEVERITIES)}

#: the wildcard "some path" of file rules (a valid permission: any absolute path)
ANY_PATH: Final = "/**"


def rank(severity: str) -> int:
    """The order of a severity (``info`` 0 ... ``critical`` 4)."""
    return _RANK[severity]


@attrs.frozen
class Rule:
    """One capability the scanner looks for."""

    id: str
    severity: Severity
    #: what it detects, for the docs and ``--json``
    summary: str
    #: the permission that would allow it (wildcards where unknown), ``None`` when none can
    permission: str | None = None
    #: other permissions that also allow it (a raw socket: connect or listen)
    alternatives: tuple[str, ...] = ()


_RULES: Final = (
    Rule(
        "subprocess",
        "high",
        "starts processes: subprocess.*, os.system/popen/exec*/spawn*/fork/kill, pty.spawn, "
        "asyncio.create_subprocess_*, anyio.run_process/open_process, multiprocessing",
        "subprocess",
    ),
    Rule("eval", "high", "runs code built at run time: eval(), exec(), code.interact (never downgraded)"),
    Rule("compile", "medium", "compiles code at run time: compile()"),
    Rule(
        "dynamic-import",
        "medium",
        "imports or runs code named at run time: __import__/importlib.import_module with a non-constant name, "
        "importlib.util.spec_from_file_location, runpy, zipimport, sys.path changes (that code is not scanned)",
    ),
    Rule(
        "socket",
        "high",
        "raw sockets and name resolution: socket.socket/fromfd/getaddrinfo/gethostbyname",
        "net:connect:*:*",
        ("net:listen:*:*",),
    ),
    Rule(
        "net-connect",
        "high",
        "opens network connections: socket.create_connection, asyncio.open_connection, loop.create_connection, "
        "anyio.connect_tcp, smtplib, ftplib, websockets.connect",
        "net:connect:*:*",
    ),
    Rule(
        "net-listen",
        "high",
        "listens on the network: socket.create_server, asyncio.start_server, loop.create_server, "
        "anyio.create_tcp_listener, http.server, socketserver, uvicorn",
        "net:listen:*:*",
    ),
    Rule(
        "http-client",
        "high",
        "makes HTTP requests: http.client, urllib.request, httpx, requests, aiohttp, urllib3",
        "net:connect:*:*",
    ),
    Rule(
        "file-read",
        "low",
        "reads files: open() for reading, Path.read_text/read_bytes, os.listdir/scandir/walk",
        f"fs:read:{ANY_PATH}",
    ),
    Rule(
        "file-write",
        "medium",
        "creates, writes or deletes files: open() for writing, Path.write_text/unlink/mkdir, "
        "os.remove/unlink/rename/replace/makedirs, shutil.*, tempfile.*, sqlite3.connect",
        f"fs:write:{ANY_PATH}",
    ),
    Rule("ffi", "high", "loads native code: imports ctypes or cffi", "ffi"),
    Rule(
        "native-code",
        "medium",
        "a C extension (or other non-source module) in the plugin's package: its code cannot be scanned",
        "ffi",
    ),
    Rule(
        "deserialize",
        "medium",
        "unpickles data (code execution if the data is not trusted): pickle/marshal/dill loads, shelve, yaml.load",
    ),
    Rule("environ", "low", "reads environment variables (they often hold secrets): os.environ, os.getenv"),
    Rule("environ-write", "medium", "changes the process environment: os.environ[...] = ..., os.putenv, os.unsetenv"),
    Rule(
        "module-tamper",
        "high",
        "changes other code at run time: setattr/assignment on an imported module, sys.modules, "
        "sys.meta_path, sys.path_hooks",
    ),
    Rule(
        "audit-hook",
        "critical",
        "tampers with the interpreter's audit and trace machinery: sys.addaudithook, sys.settrace, "
        "sys.setprofile, threading.settrace/setprofile (never downgraded)",
    ),
    Rule(
        "introspection",
        "low",
        "reaches other code's frames and objects: sys._getframe, inspect.currentframe/stack, "
        "gc.get_objects/get_referrers, frame attributes (f_globals, f_locals, f_back)",
    ),
    Rule(
        "dynamic-access",
        "medium",
        "reaches a sensitive module's attributes by a computed name (getattr(os, name)), "
        "__builtins__, __globals__, __subclasses__",
    ),
    Rule(
        "unscannable",
        "medium",
        "a file of the plugin that cannot be read or parsed, or a module without source: not scanned",
    ),
    Rule("not-found", "high", "the plugin's module could not be located: nothing was scanned"),
)

#: rule id -> rule
RULES: Final[dict[str, Rule]] = {rule.id: rule for rule in _RULES}


def _names(prefix: str, names: str) -> list[str]:
    return [f"{prefix}.{name}" if prefix else name for name in names.split()]


def _table(rule: str, *groups: list[str]) -> dict[str, str]:
    return {name: rule for group in groups for name in group}


#: exact dotted name of a callable -> rule
CALLS: Final[dict[str, str]] = {
    **_table(
        "subprocess",
        _names("subprocess", "run call check_call check_output Popen getoutput getstatusoutput"),
        _names("os", "system popen posix_spawn posix_spawnp fork forkpty startfile kill killpg"),
        _names("pty", "spawn fork"),
        _names("asyncio", "create_subprocess_exec create_subprocess_shell"),
        _names("asyncio.subprocess", "create_subprocess_exec create_subprocess_shell"),
        _names("anyio", "run_process open_process"),
        _names("trio", "run_process"),
        _names("trio.lowlevel", "open_process"),
        _names("multiprocessing", "Process Pool get_context"),
        _names("multiprocessing.pool", "Pool ThreadPool"),
        _names("concurrent.futures", "ProcessPoolExecutor"),
    ),
    **_table(
        "eval",
        _names("builtins", "eval exec"),
        _names("code", "interact InteractiveConsole InteractiveInterpreter"),
    ),
    **_table("compile", _names("builtins", "compile")),
    **_table(
        "dynamic-import",
        _names("builtins", "__import__"),
        _names("importlib", "import_module __import__"),
        _names("importlib.util", "spec_from_file_location spec_from_loader"),
        _names("importlib.machinery", "SourceFileLoader SourcelessFileLoader ExtensionFileLoader"),
        _names("runpy", "run_path run_module"),
        _names("zipimport", "zipimporter"),
        _names("imp", "load_source load_module load_compiled load_dynamic"),
        _names("sys.path", "insert append extend"),
    ),
    **_table(
        "socket",
        _names("socket", "socket fromfd fromshare getaddrinfo gethostbyname gethostbyname_ex gethostbyaddr"),
    ),
    **_table(
        "net-connect",
        _names("socket", "create_connection"),
        _names("asyncio", "open_connection open_unix_connection"),
        _names("anyio", "connect_tcp connect_unix create_connected_udp_socket"),
        _names("trio", "open_tcp_stream open_ssl_over_tcp_stream open_unix_socket"),
        _names("smtplib", "SMTP SMTP_SSL LMTP"),
        _names("ftplib", "FTP FTP_TLS"),
        _names("poplib", "POP3 POP3_SSL"),
        _names("imaplib", "IMAP4 IMAP4_SSL"),
        _names("telnetlib", "Telnet"),
        _names("nntplib", "NNTP NNTP_SSL"),
        _names("websockets", "connect"),
        _names("websockets.client", "connect"),
    ),
    **_table(
        "net-listen",
        _names("socket", "create_server"),
        _names("asyncio", "start_server start_unix_server"),
        _names("anyio", "create_tcp_listener create_unix_listener create_udp_socket"),
        _names("trio", "serve_tcp open_tcp_listeners serve_ssl_over_tcp"),
        _names("http.server", "HTTPServer ThreadingHTTPServer"),
        _names(
            "socketserver",
            "TCPServer UDPServer UnixStreamServer ThreadingTCPServer ThreadingUDPServer ForkingTCPServer",
        ),
        _names("xmlrpc.server", "SimpleXMLRPCServer"),
        _names("uvicorn", "run Server"),
        _names("hypercorn.asyncio", "serve"),
        _names("websockets", "serve"),
        _names("websockets.server", "serve"),
    ),
    **_table(
        "http-client",
        _names("http.client", "HTTPConnection HTTPSConnection"),
        _names("urllib.request", "urlopen urlretrieve build_opener OpenerDirector"),
        _names(
            "httpx",
            "Client AsyncClient get post put patch delete head options request stream HTTPTransport AsyncHTTPTransport",
        ),
        _names("requests", "get post put patch delete head options request Session session"),
        _names("requests.sessions", "Session"),
        _names("aiohttp", "ClientSession request TCPConnector"),
        _names("urllib3", "PoolManager ProxyManager HTTPConnectionPool HTTPSConnectionPool request"),
        _names("xmlrpc.client", "ServerProxy"),
    ),
    **_table(
        "file-read",
        _names("os", "listdir scandir walk fwalk"),
        _names("tokenize", "open"),
        _names("fileinput", "input FileInput"),
    ),
    **_table(
        "file-write",
        _names(
            "os",
            "remove unlink rename renames replace rmdir removedirs mkdir makedirs truncate chmod chown lchown "
            "symlink link utime mkfifo mknod",
        ),
        _names(
            "shutil",
            "copy copy2 copyfile copytree copymode copystat move rmtree make_archive unpack_archive chown",
        ),
        _names(
            "tempfile",
            "mkstemp mkdtemp NamedTemporaryFile TemporaryFile SpooledTemporaryFile TemporaryDirectory",
        ),
    ),
    **_table(
        "deserialize",
        _names("pickle", "load loads Unpickler"),
        _names("_pickle", "load loads Unpickler"),
        _names("cPickle", "load loads Unpickler"),
        _names("marshal", "load loads"),
        _names("dill", "load loads"),
        _names("cloudpickle", "load loads"),
        _names("joblib", "load"),
        _names("shelve", "open"),
        _names("jsonpickle", "decode"),
        _names("yaml", "unsafe_load unsafe_load_all full_load full_load_all"),
    ),
    **_table("environ", _names("os", "getenv getenvb")),
    **_table(
        "environ-write",
        _names("os", "putenv unsetenv"),
        _names("os.environ", "update setdefault pop popitem clear __setitem__ __delitem__"),
    ),
    **_table(
        "module-tamper",
        _names("sys.modules", "update pop setdefault popitem clear __setitem__ __delitem__"),
        _names("sys.meta_path", "insert append extend __setitem__"),
        _names("sys.path_hooks", "insert append extend __setitem__"),
    ),
    **_table(
        "audit-hook",
        _names("sys", "addaudithook settrace setprofile"),
        _names("threading", "settrace setprofile settrace_all_threads setprofile_all_threads"),
        _names("sys.monitoring", "register_callback use_tool_id set_events set_local_events"),
        _names("_thread", "settrace setprofile"),
    ),
    **_table(
        "introspection",
        _names("sys", "_getframe _current_frames"),
        _names("inspect", "currentframe stack trace getouterframes getinnerframes"),
        _names("gc", "get_objects get_referrers get_referents"),
    ),
}

#: callables that open a file: name -> (index of the path argument or None, index of the mode argument,
#: the default mode); ``"w"`` as default means "always writes"
OPENERS: Final[dict[str, tuple[int | None, int, str]]] = {
    "builtins.open": (0, 1, "r"),
    "io.open": (0, 1, "r"),
    "io.FileIO": (0, 1, "r"),
    "codecs.open": (0, 1, "r"),
    "aiofiles.open": (0, 1, "r"),
    "anyio.open_file": (0, 1, "r"),
    "trio.open_file": (0, 1, "r"),
    "gzip.open": (0, 1, "rb"),
    "bz2.open": (0, 1, "rb"),
    "lzma.open": (0, 1, "rb"),
    "tarfile.open": (0, 1, "r"),
    "zipfile.ZipFile": (0, 1, "r"),
    "dbm.open": (0, 1, "r"),
    "sqlite3.connect": (0, 99, "w"),
    "aiosqlite.connect": (0, 99, "w"),
    "os.open": (0, 1, "flags"),
}

#: path-like classes whose instances do file IO (``pathlib.Path(x).open("w")``)
PATH_CLASSES: Final = ("pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "anyio.Path", "trio.Path")
#: methods of a path object -> rule (``Path(...).open`` is an opener: mode is argument 0)
PATH_METHODS: Final[dict[str, str]] = {
    "open": "open",
    "rename": "file-write",
    "replace": "file-write",
    "chmod": "file-write",
    "lchmod": "file-write",
    "iterdir": "file-read",
    "glob": "file-read",
    "rglob": "file-read",
}

#: dotted prefixes: every name under them -> rule (``os.execv``, ``os.environ.get``)
PREFIXES: Final[tuple[tuple[str, str], ...]] = (
    ("os.exec", "subprocess"),
    ("os.spawn", "subprocess"),
    ("os.posix_spawn", "subprocess"),
    ("os.environ", "environ"),
    ("os.environb", "environ"),
    ("posix.environ", "environ"),
)

#: method names matched on receivers the analyzer cannot resolve (``loop.create_connection``)
METHODS: Final[dict[str, str]] = {
    "create_connection": "net-connect",
    "create_unix_connection": "net-connect",
    "create_datagram_endpoint": "net-connect",
    "sock_connect": "net-connect",
    "create_server": "net-listen",
    "create_unix_server": "net-listen",
    "subprocess_exec": "subprocess",
    "subprocess_shell": "subprocess",
    "write_text": "file-write",
    "write_bytes": "file-write",
    "unlink": "file-write",
    "touch": "file-write",
    "mkdir": "file-write",
    "rmdir": "file-write",
    "symlink_to": "file-write",
    "hardlink_to": "file-write",
    "read_text": "file-read",
    "read_bytes": "file-read",
    "exec_module": "dynamic-import",
}

#: attribute names that reach into frames or around the sandbox, whatever the object
ATTRIBUTES: Final[dict[str, str]] = {
    "f_globals": "introspection",
    "f_locals": "introspection",
    "f_back": "introspection",
    "f_builtins": "introspection",
    "tb_frame": "introspection",
    "gi_frame": "introspection",
    "cr_frame": "introspection",
    "ag_frame": "introspection",
    "__globals__": "dynamic-access",
    "__subclasses__": "dynamic-access",
    "__builtins__": "dynamic-access",
}

#: modules imported for their native-code capability -> rule (the import itself is the finding)
IMPORTS: Final[dict[str, str]] = {"ctypes": "ffi", "_ctypes": "ffi", "cffi": "ffi", "_cffi_backend": "ffi"}

#: modules whose attributes a computed ``getattr`` must not reach
SENSITIVE_MODULES: Final = frozenset(
    {
        "builtins",
        "os",
        "posix",
        "sys",
        "subprocess",
        "socket",
        "ctypes",
        "importlib",
        "pickle",
        "marshal",
        "shutil",
        "pty",
        "asyncio",
        "io",
        "gc",
        "inspect",
        "multiprocessing",
    }
)

#: what each rule's message says it lets the code do
VERBS: Final[dict[str, str]] = {
    "subprocess": "starts processes",
    "eval": "runs code built at run time",
    "compile": "compiles code at run time",
    "dynamic-import": "loads code named at run time (not scanned)",
    "socket": "opens raw sockets or resolves host names",
    "net-connect": "opens network connections",
    "net-listen": "listens on the network",
    "http-client": "makes HTTP requests",
    "file-read": "reads files",
    "file-write": "writes or deletes files",
    "ffi": "loads native code",
    "native-code": "native code the scan cannot read",
    "deserialize": "unpickles data (runs code if the data is not trusted)",
    "environ": "reads environment variables",
    "environ-write": "changes the process environment",
    "module-tamper": "changes other modules at run time",
    "audit-hook": "tampers with audit or trace hooks",
    "introspection": "reaches other code's frames or objects",
    "dynamic-access": "reaches attributes by a computed name",
}
