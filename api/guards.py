"""The first guards of the HTTP edge (order: docs/ARCHITECTURE.md): Host/Origin (403), token (401).

A browser on the operator's machine can be made to send requests to loopback services by
any page it visits. Three things keep such requests out:

* ``Host`` must be a loopback name or address, the address the server is bound to, or a
  host the operator configured (``--allowed-host``). A DNS-rebinding page reaches us under
  the attacker's host name, which is none of those.
* ``Origin``, when present, must be the request's own origin (same scheme-host-port as
  ``Host``). Browsers send it on every cross-origin POST, including ``no-cors`` fetches,
  form posts and beacons; ``Origin: null`` (sandboxed frames, ``file:``) is foreign too.
* ``Sec-Fetch-Site``, when present, must be ``same-origin`` or ``none`` (the user typed the
  address). This also catches cross-site GETs (``<img>``, ``<script>``) that carry no
  ``Origin``. Non-browser clients send neither header, so they are unaffected.

The server never answers CORS: no ``Access-Control-*`` header is ever sent, so a preflight
fails in the browser even before the Origin guard refuses it.

The token (``--token``) is compared with :func:`hmac.compare_digest`, in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from werkzeug.datastructures import Headers

from .config import ServerConfig, is_loopback, is_wildcard, normalize_host_name
from .errors import ApiError

DEFAULT_PORTS = {"http": 80, "https": 443}
SAFE_FETCH_SITES = ("same-origin", "none")


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` header → (normalized name, port or None); None when it is malformed."""
    value = value.strip()
    port_text = ""
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    else:
        name, _, port_text = value.partition(":") if value.count(":") == 1 else (value, "", "")
        if ":" in name:  # a bare IPv6 address without brackets is not a valid Host
            return None
    if port_text and not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        return None
    normalized = normalize_host_name(name)
    if normalized is None:
        return None
    return normalized, int(port_text) if port_text else None


class EdgeGuards:
    """The browser guards and the token check for one server configuration."""

    def __init__(self, config: ServerConfig):
        self.token = config.token
        names = set(config.allowed_hosts)
        # The address the server is bound to is what remote clients put in Host; a literal
        # address cannot be rebound by DNS, so it is as safe as the loopback ones.
        if not is_wildcard(config.host):
            bound = normalize_host_name(config.host)
            if bound is not None:
                names.add(bound)
        self.allowed_names = frozenset(names)

    def host_allowed(self, name: str) -> bool:
        return is_loopback(name) or name in self.allowed_names

    def check_browser(self, headers: Headers) -> None:
        """Refuse (403) a foreign Host, a foreign Origin or a cross-site fetch."""
        host_header = headers.get("Host")
        host = split_host(host_header) if host_header is not None else None
        # A request without Host (HTTP/1.0) cannot come from a browser; one with a
        # malformed or foreign Host may be a DNS-rebinding page.
        if host_header is not None and (host is None or not self.host_allowed(host[0])):
            raise ApiError(403, "host_not_allowed",
                           f"Host {host_header[:100]!r} is not one this server answers to: use "
                           "localhost or a loopback address (the operator can add names with "
                           "--allowed-host).")
        origin = headers.get("Origin")
        if origin is not None and not _same_origin(origin, host):
            raise ApiError(403, "origin_not_allowed",
                           f"Requests from the web origin {origin[:100]!r} are refused: this API "
                           "is not for web pages. Send the request without an Origin header.")
        site = headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() not in SAFE_FETCH_SITES:
            raise ApiError(403, "cross_site_request",
                           "Cross-site requests from a browser are refused: this API is not "
                           "for web pages.")

    def check_token(self, headers: Headers) -> bool:
        """Refuse (401) a missing or wrong token; True if a token was required and given."""
        if self.token is None:
            return False
        scheme, _, presented = headers.get("Authorization", "").partition(" ")
        # compare_digest on bytes: constant time in the token's content, for any input.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode("utf-8", "surrogateescape"), self.token.encode()):
            raise ApiError(401, "unauthorized", "This server needs 'Authorization: Bearer "
                           "<token>' with the operator's token.",
                           headers={"WWW-Authenticate": "Bearer"})
        return True


def _same_origin(origin: str, host: tuple[str, int | None] | None) -> bool:
    """True if ``origin`` is the origin of the request's own ``Host``."""
    if host is None:
        return False
    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in DEFAULT_PORTS or parts.path or parts.query or not parts.hostname:
        return False
    name = normalize_host_name(parts.hostname)
    default = DEFAULT_PORTS[parts.scheme]
    return name == host[0] and (origin_port or default) == (host[1] or default)
