"""A throw-away PostgreSQL server on loopback for the tests of `--storage=postgresql://...`.

`PostgresServer.find()` locates the server binaries (None without them); `start()` runs `initdb` into a
fresh data directory and `pg_ctl start` on a free port; `create_database(name)` returns the URL of a
new database; `restart(down_s)` is `pg_ctl stop` then `start`, as an administrator restarting the
database would. PostgreSQL refuses to run as root: as root, the data directory belongs to the
unprivileged `postgres` user and every server command runs as that user.
"""

from __future__ import annotations

import atexit
import glob
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

USER = "postgres"  # the database superuser, and the system user that runs the server under root
PASSWORD = "effnetx-test"
# Durability traded for speed (a test server's data is thrown away): no fsync, no waiting on WAL flushes.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self, bin_dir: str):
        self.bin_dir = pathlib.Path(bin_dir)
        self.port = _free_port()
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="effnetx-postgres-"))
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self._as_root = os.geteuid() == 0

    @staticmethod
    def find() -> str | None:
        """The directory of `initdb` and `pg_ctl`: Debian's versioned folders (newest first), else the PATH."""
        for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
            if os.path.exists(os.path.join(bin_dir, "pg_ctl")):
                return bin_dir
        pg_ctl = shutil.which("pg_ctl")
        return os.path.dirname(pg_ctl) if pg_ctl and shutil.which("initdb") else None

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr or result.stdout}\n{log}")

    def start(self) -> PostgresServer:
        """initdb (password authentication, superuser `postgres`) into a new data directory, then start."""
        password_file = self.root / "password"
        password_file.write_text(PASSWORD)
        if self._as_root:  # the server user needs the folder it writes into
            user = pwd.getpwnam(USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chown(password_file, user.pw_uid, user.pw_gid)
        self._run(
            "initdb",
            f"--pgdata={self.data_dir}",
            f"--username={USER}",
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--no-sync",
            "--encoding=UTF8",
        )
        self._pg_ctl_start()
        atexit.register(self.close)  # also when a session ends without its fixture's teardown
        return self

    def _pg_ctl_start(self) -> None:
        settings = ["listen_addresses=127.0.0.1", f"port={self.port}", "unix_socket_directories=", *FAST_SETTINGS]
        options = " ".join(f"-c {setting}" for setting in settings)
        self._run("pg_ctl", "start", "--wait", f"--pgdata={self.data_dir}", f"--log={self.log_file}", "-o", options)

    def stop(self) -> None:
        # fast: active connections are cut off, as in a restart of a real server
        self._run("pg_ctl", "stop", "--wait", "--mode=fast", f"--pgdata={self.data_dir}")

    def restart(self, down_s: float = 0.0) -> None:
        """Stops the server, leaves it down for `down_s` seconds, and starts it again (same data, same port)."""
        self.stop()
        time.sleep(down_s)
        self._pg_ctl_start()

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database `name` (as `createdb` does); its URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        """Stops the server (if it runs) and deletes its files."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
