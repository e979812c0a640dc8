"""Fetching user-supplied http(s) URLs without letting them reach inside the network (SSRF).

Every hop of a fetch is checked the same way: the scheme must be http or https, the host is resolved once, every
address it resolves to must be public, and the connection goes to that checked address (the original host name
stays in the `Host` header and in TLS SNI / certificate checks), so a second DNS answer cannot swap in a private
address (DNS rebinding). Redirects are followed by hand, a bounded number of times, each hop checked again.
The body is streamed with a byte cap and the whole fetch has one deadline.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass

import httpx

from wanserve.errors import InvalidRequestError, PayloadTooLargeError

logger = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("http", "https")
_REDIRECT_CODES = (301, 302, 303, 307, 308)
_CHUNK_BYTES = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class FetchConfig:
    """Limits for fetching user-supplied URLs."""

    max_bytes: int = 100 * 1024 * 1024
    """Largest body accepted, in bytes."""
    timeout_s: float = 30.0
    """Deadline for the whole fetch (every hop and the body), in seconds."""
    max_redirects: int = 5
    """Redirects followed before giving up."""
    allow_private_addresses: bool = False
    """Allow loopback, private, link-local and other non-public addresses (tests, intranets). Off by default."""

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"`max_bytes` must be at least 1, got {self.max_bytes}")
        if self.timeout_s <= 0:
            raise ValueError(f"`timeout_s` must be positive, got {self.timeout_s}")
        if self.max_redirects < 0:
            raise ValueError(f"`max_redirects` must be 0 or more, got {self.max_redirects}")


@dataclass(frozen=True)
class PinnedURL:
    """A checked URL: the original, and the address the connection must go to."""

    url: httpx.URL
    address: IPAddress

    @property
    def host(self) -> str:
        """The host name in ASCII (IDNA-encoded), without brackets."""
        return self.url.raw_host.decode("ascii")

    @property
    def connect_url(self) -> httpx.URL:
        """The URL with its host replaced by the checked address."""
        return self.url.copy_with(host=str(self.address))

    @property
    def headers(self) -> dict[str, str]:
        """The `Host` header the server expects (the original host, with a non-default port)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return {"Host": host if self.url.port is None else f"{host}:{self.url.port}"}

    @property
    def extensions(self) -> dict[str, str]:
        """httpcore request extensions: TLS SNI and certificate checks use the original host name."""
        return {"sni_hostname": self.host} if self.url.scheme == "https" else {}


def blocked_reason(address: IPAddress) -> str | None:
    """Why `address` must not be reached from a user-supplied URL, or `None` when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            reason = blocked_reason(embedded)
            return f"{reason} (embedded in {address})" if reason else None
        if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64 of an IPv4 address
            reason = blocked_reason(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
            return f"{reason} (NAT64 {address})" if reason else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"{name} address {address}"
    return None


def _parse(url: str | httpx.URL, field: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidRequestError(field, f"`{field}` is not a valid URL ({exc}): {str(url)[:200]!r}") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise InvalidRequestError(
            field, f"`{field}` must be an http or https URL, got scheme {parsed.scheme or '(none)'!r} in {str(url)!r}"
        )
    if not parsed.host:
        raise InvalidRequestError(field, f"`{field}` has no host: {str(url)!r}")
    if parsed.userinfo:
        raise InvalidRequestError(field, f"`{field}` must not carry credentials: {parsed.copy_with(userinfo=b'')!s}")
    return parsed


def resolve_url(url: str | httpx.URL, field: str, allow_private_addresses: bool = False) -> PinnedURL:
    """Checks the scheme, resolves the host and checks every address. Raises `InvalidRequestError`."""
    parsed = _parse(url, field)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parsed.raw_host.decode("ascii"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidRequestError(field, f"`{field}` host {parsed.host!r} does not resolve ({exc}): {parsed}") from None
    addresses = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        addresses.append(ipaddress.ip_address(text))
    if not addresses:
        raise InvalidRequestError(field, f"`{field}` host {parsed.host!r} has no address: {parsed}")
    if not allow_private_addresses:
        for address in addresses:
            reason = blocked_reason(address)
            if reason:
                raise InvalidRequestError(
                    field, f"`{field}` points to a non-public address ({reason}); refused: {parsed}"
                )
    return PinnedURL(url=parsed, address=addresses[0])


def fetch_url(
    url: str,
    field: str,
    max_bytes: int,
    timeout_s: float,
    *,
    allow_private_addresses: bool = False,
    max_redirects: int = 5,
) -> bytes:
    """Downloads `url` (the value of request field `field`) and returns its body.

    Raises `InvalidRequestError` naming the field and URL for a refused or failed fetch, and
    `PayloadTooLargeError` when the body exceeds `max_bytes`.
    """
    deadline = time.monotonic() + timeout_s
    current: str | httpx.URL = url
    with httpx.Client(trust_env=False, follow_redirects=False) as client:
        for _hop in range(max_redirects + 1):
            pinned = resolve_url(current, field, allow_private_addresses)
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise _timeout(field, url, timeout_s)
            request = client.build_request(
                "GET",
                pinned.connect_url,
                headers=pinned.headers,
                extensions=pinned.extensions,
                timeout=httpx.Timeout(remaining_s),
            )
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException:
                raise _timeout(field, url, timeout_s) from None
            except httpx.HTTPError as exc:
                raise InvalidRequestError(field, f"`{field}` could not be fetched ({exc}): {url}") from None
            try:
                if response.status_code in _REDIRECT_CODES and "location" in response.headers:
                    current = pinned.url.join(response.headers["location"])
                    logger.debug("fetch of %s redirected to %s", url, current)
                    continue
                return _read_body(response, field, url, max_bytes, timeout_s, deadline)
            finally:
                response.close()
    raise InvalidRequestError(field, f"`{field}` redirected more than {max_redirects} times: {url}")


def fetch_with_config(url: str, field: str, config: FetchConfig) -> bytes:
    """`fetch_url` with the limits of a `FetchConfig`."""
    return fetch_url(
        url,
        field,
        config.max_bytes,
        config.timeout_s,
        allow_private_addresses=config.allow_private_addresses,
        max_redirects=config.max_redirects,
    )


def _read_body(
    response: httpx.Response, field: str, url: str, max_bytes: int, timeout_s: float, deadline: float
) -> bytes:
    if response.status_code >= 400:
        raise InvalidRequestError(field, f"`{field}` could not be fetched: HTTP {response.status_code} from {url}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(
            field, f"`{field}` is {int(declared)} bytes, more than the {max_bytes} allowed: {url}"
        )
    body = bytearray()
    try:
        for chunk in response.iter_bytes(_CHUNK_BYTES):
            body += chunk
            if len(body) > max_bytes:
                raise PayloadTooLargeError(field, f"`{field}` is more than the {max_bytes} bytes allowed: {url}")
            if time.monotonic() > deadline:
                raise _timeout(field, url, timeout_s)
    except httpx.TimeoutException:
        raise _timeout(field, url, timeout_s) from None
    except httpx.HTTPError as exc:
        raise InvalidRequestError(field, f"`{field}` could not be fetched ({exc}): {url}") from None
    return bytes(body)


def _timeout(field: str, url: str, timeout_s: float) -> InvalidRequestError:
    return InvalidRequestError(field, f"`{field}` took longer than {timeout_s:g} s to fetch: {url}")
