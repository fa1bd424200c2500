"""Store URLs read without connecting: redaction for logs, and the Redis Cluster URL, parsed
here so that a bad one is refused with the config file's path (`check-config` included), and
opened by `gateway.store.connect`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # -> TLS
_REDIS_DEFAULT_PORT = 6379
# Query options of a cluster URL, and their types (redis-py's RedisCluster arguments).
_CLUSTER_OPTIONS: dict[str, type] = {
    "socket_connect_timeout": float,
    "socket_timeout": float,
    "max_connections": int,
    "client_name": str,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": bool,
}


def redact_url(url: str) -> str:
    """The URL with any password (userinfo or `password=` query options) replaced by `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and userinfo:
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    options = []
    for item in parts.query.split("&") if parts.query else ():
        name = item.partition("=")[0]
        options.append(f"{name}=***" if "password" in name.lower() else item)
    query = "&".join(options)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Rebuilt by hand: urlunsplit drops the "//" of an empty authority (unix:///path).
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{parts.path}{tail}"


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a bare name, or a bare IPv6 address (no port possible without brackets)
        host, port = text, ""
    if port and not port.isdigit():
        raise ValueError(f"bad address {text!r}: port must be a number")
    return host, int(port) if port else default_port


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """`redis+cluster://[user:password@]host:port[,host:port...][/][?options]` (TLS:
    `rediss+cluster://`). The hosts are where the cluster is first found (any of its nodes; the
    rest is learnt from it); the database is 0, the only one a cluster has."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool
    username: str | None
    password: str | None
    options: dict[str, object]

    @classmethod
    def parse(cls, url: str) -> ClusterUrl:
        parts = urlsplit(url)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        username, _, password = userinfo.partition(":")
        shown = redact_url(url)
        try:
            nodes = tuple(host_port(h, _REDIS_DEFAULT_PORT) for h in hosts.split(",") if h)
        except ValueError as exc:
            raise ValueError(f"bad cluster url {shown!r}: {exc}") from None
        if not nodes:
            raise ValueError(
                f"bad cluster url {shown!r}: expected redis+cluster://host:port[,host:port...]"
            )
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError(f"bad cluster url {shown!r}: a cluster has database 0 only")
        options: dict[str, object] = {}
        for name, values in parse_qs(parts.query).items():
            kind = _CLUSTER_OPTIONS.get(name)
            if kind is None:
                known = ", ".join(sorted(_CLUSTER_OPTIONS))
                raise ValueError(f"bad cluster url {shown!r}: unknown option {name!r} ({known})")
            options[name] = _option(shown, name, values[-1], kind)
        return cls(
            nodes=nodes,
            tls=CLUSTER_SCHEMES[parts.scheme.lower()],
            username=unquote(username) or None,
            password=unquote(password) or None,
            options=options,
        )


def _option(url: str, name: str, text: str, kind: type) -> object:
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"bad cluster url {url!r}: {name} must be true or false")
        return text.lower() in ("true", "1", "yes")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"bad cluster url {url!r}: {name} must be a {kind.__name__}") from None


def cluster_url_problem(url: str) -> str | None:
    """Why `url` is not a usable cluster URL, or None (also for URLs of other schemes)."""
    if urlsplit(url).scheme.lower() not in CLUSTER_SCHEMES:
        return None
    try:
        ClusterUrl.parse(url)
    except ValueError as exc:
        return str(exc)
    return None
