from wardsync.core.net import is_loopback_host


def test_loopback_hosts() -> None:
    for host in ("localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1", "[::1]"):
        assert is_loopback_host(host), host
    for host in (None, "", "fhir.example.org", "10.0.0.1", "localhost.example.org",
                 "[2001:db8::1]", "127.0.0.1.example.org"):
        assert not is_loopback_host(host), host
