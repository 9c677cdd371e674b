"""The peer URL a node announces (accel/node/daemon.py ``advertised_url``): the listen
address, or for a wildcard one the address this host reaches the hub from."""

from __future__ import annotations

from accel.node.daemon import advertised_url


def test_a_concrete_listen_address_is_announced_as_is() -> None:
    assert advertised_url("10.1.2.3", 8701, "http://hub:8600") == "http://10.1.2.3:8701"
    assert advertised_url("::1", 8701, None) == "http://[::1]:8701"


def test_a_wildcard_listen_address_is_announced_as_the_route_to_the_hub() -> None:
    # a UDP connect picks the source address towards the hub without sending anything
    assert advertised_url("0.0.0.0", 8701, "http://127.0.0.1:8600") == "http://127.0.0.1:8701"
    assert advertised_url("::", 9, "http://[::1]:8600") == "http://[::1]:9"
