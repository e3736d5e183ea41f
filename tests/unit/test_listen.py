"""ssehub.listen.bind: a port in use is one line naming it and the option to change."""

from __future__ import annotations

import socket

import pytest
from ssehub.errors import PortUnavailable
from ssehub.listen import bind


def test_a_free_port_is_bound() -> None:
    with bind("127.0.0.1", 0) as sock:
        assert sock.getsockname()[1] > 0


def test_a_port_in_use_is_named_with_the_option_to_change_it() -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        with pytest.raises(PortUnavailable) as caught:
            bind("127.0.0.1", port, option="--metrics-port")
    assert str(caught.value) == (
        f"port {port} on 127.0.0.1 is already in use (by another ssehub or another program); "
        "stop it, or choose another port with --metrics-port"
    )


def test_an_address_that_is_not_ours_is_said() -> None:
    with pytest.raises(PortUnavailable, match=r"^cannot listen on 192\.0\.2\.1:8000: "):
        bind("192.0.2.1", 8000)  # TEST-NET-1: on no interface of this machine
