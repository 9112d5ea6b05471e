"""Suite-wide guard: no log record, from any logger at any level, ever contains a canary key.

Tests that use a real-looking API key use one that starts with ``CANARY_PREFIX`` (see
``tests.support.fakes.KEY``). During every test the root logger is opened to DEBUG (httpx and
httpcore included) and every record is scanned, message and traceback alike.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Iterator

import pytest

from mai_tools.jobbook import forget_open_books
from tests.support.emulators import EmulatorPool
from tests.support.postgres import PostgresServer, PostgresUnavailable, start_postgres

CANARY_PREFIX = "sk-canary-"

# The modules holding the longest tests, longest first (summed from the slowest 60 of
# `coverage run -m pytest -n 2 --dist worksteal --durations=60` on 2026-12-07, 1,891 tests: each
# of these holds a test of 9-53 s). They run first, so no xdist worker starts a long test near the
# end while the other one has nothing left to do. Whole modules move, in their own order, so
# module-scoped fixtures are set up once; a module missing here only keeps its usual place.
LONGEST_FIRST = (
    "tests/mcp/test_auth_tokens.py",
    "tests/mcp/test_mcp_server.py",
    "tests/property/test_property_media_urls.py",
    "tests/mcp/test_mcp_job_book.py",
    "tests/mcp/test_mcp_tasks.py",
    "tests/docs/test_snippets.py",  # one test per docs page: ~70 s in all, the longest ~15 s
    "tests/batch/test_batch_process.py",
    "tests/packaging/test_mcpb.py",
    "tests/webhooks/test_push_flow.py",
    "tests/batch/test_batch_hostile.py",
    "tests/core/test_results_and_api.py",
    "tests/mcp/test_operate.py",
    "tests/cli/test_examples.py",
    "tests/jobbook/test_book.py",
    "tests/mcp/test_host_timeouts.py",
    "tests/cli/test_cli_job_book.py",
    "tests/mcp/test_tasks_2025.py",
    "tests/mcp/test_confirm.py",
    "tests/reliability/test_soak.py",
    "tests/langchain/test_langchain_example.py",
    "tests/emulator/test_openapi.py",
    "tests/core/test_policies.py",
    "tests/cli/test_cli_process.py",
    "tests/langchain/test_langchain_job_book.py",
    "tests/mcp/test_gallery_browser.py",
)


@pytest.hookimpl(
    optionalhook=True
)  # a pytest without xdist (some tests start one) has no such hook
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: three workers per two cores. The suite's tests mostly wait (on the servers
    and CLI subprocesses they start, on loopback I/O): with one worker per core the 2-core VM
    ran the suite at a load average of 1.3-1.7, its cores a quarter idle. The xdist variable
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when set."""
    del config
    if chosen := os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(chosen)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, (3 * (cores or 1) + 1) // 2)


@pytest.hookimpl(trylast=True)  # after pytest's own reordering (by fixture scope)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {module: i for i, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


class _LeakCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record must not hide a leak in its args
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        if CANARY_PREFIX in text:
            self.leaks.append(f"{record.name}:{record.levelname}: {text[:300]}")


@pytest.fixture(autouse=True)
def _no_key_in_any_log_record() -> Iterator[None]:
    root = logging.getLogger()
    catcher = _LeakCatcher()
    previous = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(catcher)
    try:
        yield
    finally:
        root.removeHandler(catcher)
        root.setLevel(previous)
    assert not catcher.leaks, "API key leaked into log records:\n" + "\n".join(catcher.leaks)


@pytest.fixture(autouse=True)
def _private_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads or writes the real user cache (``mai-image`` keeps job durations there);
    subprocesses inherit the variable."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(autouse=True)
def _private_job_book(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Each test has its own job book (subprocesses inherit the variable): no test adopts
    another's job, and none writes the user's real book."""
    book = tmp_path_factory.mktemp("job-book") / "jobs.sqlite3"
    monkeypatch.setenv("MAI_JOB_BOOK", str(book))
    monkeypatch.setenv("XDG_STATE_HOME", str(book.parent / "state"))
    yield
    forget_open_books()


@pytest.fixture(scope="session")
def emulators() -> Iterator[EmulatorPool]:
    """``emulators(**config)``: a reset emulator for that configuration, shared by the session
    (see :mod:`tests.support.emulators`)."""
    pool = EmulatorPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(autouse=True)
def _private_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads the real ``~/.pixazo/api-key`` (a client without a key looks there)."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private Postgres server for this pytest process (each xdist worker starts its own on
    first use, ~1 s; see :mod:`tests.support.postgres`). In CI (``CI`` set) a server that
    cannot start fails the tests that need it; elsewhere they are skipped with the reason."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the Postgres tests, and no Postgres server could start: {exc}")
        pytest.skip(f"no Postgres server could start here: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL (with a password) of an empty database on the session's server (the same
    database for every test of the process, emptied before each)."""
    if not postgres_server.is_running():  # a test took it away and did not bring it back
        postgres_server.start()
    return postgres_server.empty_database()
