"""Suite-wide rules, installed by tests/conftest.py.

- Tests marked `slow` (long crash loops, scale runs) are deselected unless the -m expression names them:
  `pytest -m slow` runs them, `pytest` does not.
- Under CI (CI=true) the PostgreSQL and MariaDB tests must run, not skip. .ci/run exports both database URLs; if
  they are missing, or any test marked `postgres` or `mysql` skips anyway (for example because a server did not
  answer), the run fails instead of passing quietly.
"""

from __future__ import annotations

import os

import pytest

from tests.db_support import MYSQL_ENV, POSTGRES_ENV

DATABASE_MARKERS = ("postgres", "mysql")


def ci_enabled() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


class DatabaseSkipGuard:
    """Collects skipped database tests; fails the session if there are any."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and any(m in report.keywords for m in DATABASE_MARKERS):
            self.skipped.append(f"{report.nodeid}: {report.longrepr[2] if isinstance(report.longrepr, tuple) else ''}")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.skipped:
            terminalreporter.section("database tests skipped under CI (not allowed)", sep="=", red=True, bold=True)
            for line in self.skipped:
                terminalreporter.write_line(line)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.skipped and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.option.markexpr or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def pytest_configure(config: pytest.Config) -> None:
    if not ci_enabled():
        return
    missing = [name for name in (POSTGRES_ENV, MYSQL_ENV) if not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(
            f"CI is set but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: the PostgreSQL "
            "and MariaDB tests would be skipped. Run through .ci/run, or unset CI for a local run."
        )
    config.pluginmanager.register(DatabaseSkipGuard(), "consent-ledger-database-skip-guard")
