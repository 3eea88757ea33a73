"""The optional second opinion: bandit, run as a library on the same files.

``bandit`` is the ``orion-kernel[scan]`` extra and is imported only when a
scan asks for it; when it is missing the scan says so in its notes and goes
on.  Bandit's ``# nosec`` comments are ignored: the code under review does
not get to silence its reviewer.  Its findings are mapped onto the scanner's
rules where they mean the same capability (B602 ``subprocess_popen_with_shell``
is ``subprocess``), so a call both see is reported once; the others keep
their bandit id (``bandit.B105``), bandit's severity, one step lower when
bandit's confidence is low.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import Final

from ._analyzer import PARSE_LOCK
from ._locate import SourceFile
from ._rules import ANY_PATH
from ._rules import RULES
from ._rules import SEVERITIES
from ._rules import Severity
from ._rules import rank

if TYPE_CHECKING:
    from ._scan import BanditState
    from ._scan import Engine
    from ._scan import RawFinding

#: bandit test id -> the scanner rule meaning the same capability
SAME_RULE: Final[dict[str, str]] = {
    "B102": "eval",
    "B307": "eval",
    "B301": "deserialize",
    "B302": "deserialize",
    "B506": "deserialize",
    "B602": "subprocess",
    "B603": "subprocess",
    "B604": "subprocess",
    "B605": "subprocess",
    "B606": "subprocess",
    "B607": "subprocess",
    "B609": "subprocess",
    "B309": "http-client",
    "B310": "http-client",
    "B113": "http-client",
    "B312": "net-connect",
    "B321": "net-connect",
}
#: bandit test id -> the permission its finding would need (for ids that keep their own rule)
PERMISSIONS: Final[dict[str, str]] = {
    "B404": "subprocess",
    "B104": "net:listen:*:*",
    "B401": "net:connect:*:*",
    "B402": "net:connect:*:*",
    "B103": f"fs:write:{ANY_PATH}",
    "B108": f"fs:write:{ANY_PATH}",
    "B306": f"fs:write:{ANY_PATH}",
}
_SEVERITY: Final[dict[str, Severity]] = {"LOW": "low", "MEDIUM": "medium", "HIGH": "high"}
#: bandit shows a progress bar above this many files; runs are split below it
_CHUNK: Final = 50
#: bandit keeps process-wide state (its extension manager, linecache): one run at a time
_RUN_LOCK: Final = threading.Lock()
INSTALL_HINT: Final = "bandit is not installed (pip install 'orion-kernel[scan]'): the bandit pass was skipped"


def available() -> bool:
    """Whether bandit can be imported (it is not imported here)."""
    from importlib.util import find_spec

    return find_spec("bandit") is not None


def bandit_findings(engine: Engine, files: Sequence[SourceFile]) -> tuple[list[RawFinding], BanditState, list[str]]:
    """Bandit's findings in ``files`` (cached per file content), its state, and notes."""
    # Importing bandit loads its report formatters through stevedore, which logs an ERROR for each one
    # whose optional dependency is missing (sarif): not ours to show, and only at the first import.
    loader_log = logging.getLogger("stevedore.extension")
    previous = loader_log.level
    loader_log.setLevel(logging.CRITICAL)
    try:
        from bandit.core import config as bandit_config  # type: ignore[import-untyped,import-not-found,unused-ignore]
        from bandit.core import manager as bandit_manager  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return [], "unavailable", [INSTALL_HINT]
    finally:
        loader_log.setLevel(previous)
    cache = engine.bandit_cache()
    results: list[RawFinding] = []
    todo: list[SourceFile] = []
    stats = {}
    for file in files:
        stat = engine.stat(file.path)
        stats[file.path] = stat
        with engine.lock:
            cached = cache.get(file.path)
        if cached is not None and stat is not None and cached[0] == stat:
            results.extend(cached[1])
        else:
            todo.append(file)
    notes: list[str] = []
    by_path = {file.path: file for file in todo}
    fresh: dict[str, list[RawFinding]] = {file.path: [] for file in todo}
    with _RUN_LOCK, PARSE_LOCK:  # bandit parses too
        for start in range(0, len(todo), _CHUNK):
            chunk = todo[start : start + _CHUNK]
            manager = bandit_manager.BanditManager(bandit_config.BanditConfig(), "file", quiet=True, ignore_nosec=True)
            manager.discover_files([file.path for file in chunk])
            manager.run_tests()
            for path, reason in manager.get_skipped():
                skipped = by_path.get(str(path))
                notes.append(f"bandit skipped {skipped.display if skipped else path}: {reason}")
            for issue in manager.get_issue_list():
                owner = by_path.get(str(issue.fname))
                if owner is not None:
                    fresh[owner.path].append(_finding(issue, owner))
    for path, found in fresh.items():
        stat = stats.get(path)
        if stat is not None:
            with engine.lock:
                cache[path] = (stat, found)
        results.extend(found)
    return results, "ran", notes


def _finding(issue: Any, file: SourceFile) -> RawFinding:
    from ._scan import RawFinding

    test_id = str(issue.test_id)
    severity = _SEVERITY.get(str(issue.severity).upper(), "low")
    confidence = str(issue.confidence).upper()
    text = f"bandit {test_id} {issue.test}: {issue.text} (severity {issue.severity}, confidence {issue.confidence})"
    line = int(issue.lineno or 1)
    col = int(issue.col_offset or 0) + 1
    rule = SAME_RULE.get(test_id)
    if rule is not None:
        spec = RULES[rule]
        return RawFinding(
            rule, spec.severity, file.display, line, col, text, spec.permission, spec.alternatives, "bandit", file.path
        )
    if confidence == "LOW" and rank(severity) > rank("low"):
        severity = SEVERITIES[rank(severity) - 1]
    return RawFinding(
        f"bandit.{test_id}", severity, file.display, line, col, text, PERMISSIONS.get(test_id), (), "bandit", file.path
    )
