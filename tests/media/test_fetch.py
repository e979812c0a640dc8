"""Safe URL fetch: refusals without network, and success/size/timeout/redirects against a real local HTTP server."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator

import pytest

from wanserve.errors import InvalidRequestError, PayloadTooLargeError
from wanserve.media import fetch
from wanserve.media.fetch import FetchConfig, blocked_reason, fetch_url, fetch_with_config, resolve_url

BODY = b"\x89PNG fake image bytes " * 100


class _Handler(http.server.BaseHTTPRequestHandler):
    release: threading.Event  # set by the fixture; /hang waits on it

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        port = self.server.server_address[1]
        if self.path == "/ok":
            self._send(200, BODY)
        elif self.path == "/host":
            self._send(200, self.headers["Host"].encode())
        elif self.path == "/big":
            self._send(200, b"x" * 5000)
        elif self.path == "/big-unannounced":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"y" * 1000)
        elif self.path == "/missing":
            self._send(404, b"no")
        elif self.path == "/redirect":
            self._redirect(f"http://127.0.0.1:{port}/ok")
        elif self.path == "/redirect-elsewhere":
            self._redirect(f"http://127.0.0.2:{port}/ok")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/hang":
            self.release.wait(10)
            self._send(200, b"late")
        else:
            self._send(500, b"?")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 (all of 127/8 reaches it: it listens on 0.0.0.0's loopback side)."""
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    httpd = http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.png",
        "http://localhost/a.png",
        "http://10.0.0.5/a.png",
        "http://192.168.1.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://0.0.0.0/a.png",
        "http://224.0.0.1/a.png",
    ],
)
def test_fetch_refuses_non_public_address(url: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        fetch_url(url, "image_url", 1000, 5)
    assert info.value.field == "image_url"
    assert "`image_url`" in str(info.value) and "non-public" in str(info.value)
    assert url.split("/")[2].split(":")[0].strip("[]") in str(info.value)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/", "/etc/passwd"])
def test_fetch_refuses_other_schemes(url: str) -> None:
    with pytest.raises(InvalidRequestError, match="`image_url` must be an http or https URL") as info:
        fetch_url(url, "image_url", 1000, 5)
    assert info.value.field == "image_url"


def test_fetch_refuses_credentials_in_url() -> None:
    with pytest.raises(InvalidRequestError, match="must not carry credentials"):
        fetch_url("http://user:secret@example.com/a.png", "image_url", 1000, 5)


def test_blocked_reason_public_addresses_pass() -> None:
    for text in ("8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert blocked_reason(ipaddress.ip_address(text)) is None


def test_blocked_reason_names_embedded_ipv4() -> None:
    assert "10.0.0.1" in blocked_reason(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert "127.0.0.1" in blocked_reason(ipaddress.ip_address("2002:7f00:1::"))  # 6to4 of 127.0.0.1


def test_resolve_refuses_when_any_address_is_private(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 80)) for ip in ("93.184.216.34", "10.0.0.7")]
    monkeypatch.setattr(fetch.socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(InvalidRequestError, match="10.0.0.7"):
        resolve_url("http://mixed.example/a.png", "image_url")


def test_fetch_connects_to_checked_address(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = server.rsplit(":", 1)[1]
    real = socket.getaddrinfo
    calls: list[str] = []

    def answer(host, *args, **kwargs):
        calls.append(host)
        # A rebinding DNS server: first 127.0.0.1, then an address that would fail. Only the first answer is used.
        if host == "rebind.test":
            ip = "127.0.0.1" if len(calls) == 1 else "203.0.113.9"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port)))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", answer)
    body = fetch_url(f"http://rebind.test:{port}/host", "image_url", 1000, 5, allow_private_addresses=True)
    assert body == f"rebind.test:{port}".encode()
    assert calls.count("rebind.test") == 1  # the socket layer then only looks up the literal 127.0.0.1


def test_fetch_success_with_private_allowed(server: str) -> None:
    assert fetch_url(f"{server}/ok", "image_url", 10_000, 5, allow_private_addresses=True) == BODY


def test_fetch_with_config_default_refuses_local_server(server: str) -> None:
    with pytest.raises(InvalidRequestError, match="loopback"):
        fetch_with_config(f"{server}/ok", "image_url", FetchConfig())
    config = FetchConfig(max_bytes=10_000, timeout_s=5, allow_private_addresses=True)
    assert fetch_with_config(f"{server}/ok", "image_url", config) == BODY


def test_fetch_too_large_declared(server: str) -> None:
    with pytest.raises(PayloadTooLargeError, match="`video_url` is 5000 bytes, more than the 4000 allowed") as info:
        fetch_url(f"{server}/big", "video_url", 4000, 5, allow_private_addresses=True)
    assert info.value.field == "video_url" and info.value.http_status == 413


def test_fetch_too_large_streamed(server: str) -> None:
    with pytest.raises(PayloadTooLargeError, match="more than the 4000 bytes allowed") as info:
        fetch_url(f"{server}/big-unannounced", "video_url", 4000, 5, allow_private_addresses=True)
    assert info.value.field == "video_url"


def test_fetch_timeout(server: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"`image_url` took longer than 0.3 s to fetch: http://127.0.0.1"):
        fetch_url(f"{server}/hang", "image_url", 1000, 0.3, allow_private_addresses=True)


def test_fetch_http_error_names_status(server: str) -> None:
    with pytest.raises(InvalidRequestError, match="HTTP 404"):
        fetch_url(f"{server}/missing", "image_url", 1000, 5, allow_private_addresses=True)


def test_fetch_follows_redirect(server: str) -> None:
    assert fetch_url(f"{server}/redirect", "image_url", 10_000, 5, allow_private_addresses=True) == BODY


def test_fetch_redirect_loop_bounded(server: str) -> None:
    with pytest.raises(InvalidRequestError, match="redirected more than 3 times"):
        fetch_url(f"{server}/loop", "image_url", 1000, 5, allow_private_addresses=True, max_redirects=3)


def test_fetch_rechecks_redirect_target(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Treat 127.0.0.1 as public for this test; its redirect to 127.0.0.2 (same server) must still be refused.
    real = fetch.blocked_reason
    monkeypatch.setattr(fetch, "blocked_reason", lambda a: None if str(a) == "127.0.0.1" else real(a))
    assert fetch_url(f"{server}/redirect", "image_url", 10_000, 5) == BODY
    with pytest.raises(InvalidRequestError, match="127.0.0.2"):
        fetch_url(f"{server}/redirect-elsewhere", "image_url", 10_000, 5)


def test_fetch_unresolvable_host_names_field() -> None:
    with pytest.raises(InvalidRequestError, match="`image_url` host 'no-such-host.invalid' does not resolve"):
        fetch_url("http://no-such-host.invalid/a.png", "image_url", 1000, 5)
