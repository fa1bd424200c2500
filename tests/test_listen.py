"""Why a port cannot be listened on, in the words a user reads: the port and the option that
picks another when another port would do, the reason otherwise."""

from __future__ import annotations

import errno
import socket

import pytest

from gateway.listen import PortUnavailable, check_port


def test_a_port_in_use_names_the_port_and_the_option() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(PortUnavailable) as refused:
            check_port("127.0.0.1", port)
    assert refused.value.in_use
    assert refused.value.message("--port") == (
        f"port {port} on 127.0.0.1 is already in use; choose another with --port"
    )


def test_an_address_of_another_machine_says_so() -> None:
    with pytest.raises(PortUnavailable) as refused:
        check_port("192.0.2.1", 8080)  # TEST-NET-1: never an address of this machine
    assert refused.value.message("--port") == (
        "cannot listen on 192.0.2.1:8080: 192.0.2.1 is not an address of this machine"
    )


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            PermissionError(errno.EACCES, "Permission denied"),
            "cannot listen on 0.0.0.0:80: permission denied (ports below 1024 need privileges); "
            "choose another port with --port",
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "cannot listen on gateway.internal:80: cannot resolve the host name 'gateway.internal'",
        ),
        (
            OSError(errno.EMFILE, "Too many open files"),
            "cannot listen on {host}:80: Too many open files",
        ),
    ],
    ids=["privileged", "unknown-host", "other"],
)
def test_other_reasons_are_one_line_too(exc: OSError, line: str) -> None:
    host = "gateway.internal" if isinstance(exc, socket.gaierror) else "0.0.0.0"
    assert PortUnavailable.of(exc, host, 80).message("--port") == line.format(host=host)
