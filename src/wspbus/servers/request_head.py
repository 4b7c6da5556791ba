"""The request head a server accepts: size limits and unambiguous message framing.

A request head is the request line and the header fields, up to the empty line. Servers that
take any head (cheroot takes any size and count, and Content-Length with Transfer-Encoding) are
open to memory exhaustion and, behind a proxy that frames the message differently, to request
smuggling. ``inspect_head`` reads the bytes received so far and says whether the head is still
incomplete, complete (and where it ends), or must be refused, and with which status: 414 for a
request line past ``max_request_line``, 431 for a header field past ``max_header_field`` or more
than ``max_headers`` fields, 400 for ambiguous framing (Content-Length with Transfer-Encoding, a
Content-Length that is not a plain decimal, differing Content-Lengths, a Transfer-Encoding whose
last coding is not chunked, whitespace before a field's colon). The defaults are gunicorn's limits.
The checks are RFC 9112's (sections 3, 5.1, 6.1, 6.3); the parsing that follows is the server's.

Where the server's own parser reads the head (uvicorn: h11 or httptools), ``asgi_head_guard``
checks the head it parsed, with the same limits and framing rules, before the app sees it, and
answers a refusal itself with ``Connection: close``. The bytes are read by then, but nothing in the
app runs on an ambiguous request, and the connection ends with the refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Awaitable
from typing import NamedTuple

from .protocols import ASGIApp, Receive, Scope, Send

__all__ = ["HeadLimits", "Refusal", "asgi_head_guard", "inspect_environ", "inspect_head", "inspect_parsed_head",
           "refusal_response", "INCOMPLETE"]

_DECIMAL = re.compile(rb"[0-9]+")


@dataclass(frozen=True)
class HeadLimits:
    """What a request head may hold, and how long it may take to arrive."""

    #: Bytes in the request line (method, target, version), CRLF not counted.
    max_request_line: int = 4094
    #: Bytes in one header field line (name, colon, value), CRLF not counted.
    max_header_field: int = 8190
    #: Header fields in one request.
    max_headers: int = 100
    #: Seconds a connection may take to send a whole request head, counted from its accept (or,
    #: on a kept-alive connection, from the end of the previous response).
    head_timeout: float = 10.0

    @property
    def max_head(self) -> int:
        """The most bytes a head within the limits can take, its line ends and end included."""
        return self.max_request_line + 2 + self.max_headers * (self.max_header_field + 2) + 2


class Refusal(NamedTuple):
    """Why a head is refused: the status line's code and reason, and a sentence for the client."""

    status: str
    explanation: str


#: inspect_head's answer while the head has not arrived whole (and nothing is wrong yet).
INCOMPLETE = -1


def inspect_head(received: bytes | bytearray, limits: HeadLimits) -> int | Refusal:
    """Where the head in ``received`` ends (the offset past its empty line), INCOMPLETE, or a Refusal.

    Lines end in LF (CRLF or, from a sloppy client, bare LF: the server then answers it). Empty
    lines before the request line are skipped, as RFC 9112 section 2.2 allows.
    """
    start = 0
    while received.startswith(b"\r\n", start) or received.startswith(b"\n", start):
        start += 2 if received.startswith(b"\r\n", start) else 1
        if start > limits.max_request_line:
            return Refusal("400 Bad Request", "Too many empty lines before the request line.")
    lines: list[bytes] = []
    position = start
    while True:
        end = received.find(b"\n", position)
        limit = limits.max_request_line if not lines else limits.max_header_field
        if end < 0:
            if len(received) - position > limit:
                return _too_long(lines)
            if len(received) > limits.max_head:  # leading empty lines and a whole head's worth
                return Refusal("431 Request Header Fields Too Large", "The request head is too large.")
            return INCOMPLETE
        line = bytes(received[position:end]).removesuffix(b"\r")
        position = end + 1
        if len(line) > limit:
            return _too_long(lines)
        if not line and lines:
            return _framing(lines[1:]) or position
        lines.append(line)
        if len(lines) - 1 > limits.max_headers:
            return Refusal("431 Request Header Fields Too Large",
                           "More than %d header fields." % limits.max_headers)


def inspect_parsed_head(request_line: int, fields: list[bytes], limits: HeadLimits) -> Refusal | None:
    """A Refusal for a head a server parsed already (its request line's length, its fields as
    'name: value' lines), or None if it is within the limits and frames its body one way."""
    if request_line > limits.max_request_line:
        return _too_long([])
    if len(fields) > limits.max_headers:
        return Refusal("431 Request Header Fields Too Large", "More than %d header fields." % limits.max_headers)
    if any(len(field) > limits.max_header_field for field in fields):
        return _too_long([b"the request line"])
    return _framing(fields)


def inspect_environ(environ: dict[str, object], limits: HeadLimits) -> Refusal | None:
    """inspect_parsed_head for a head a server parsed into a WSGI environ (granian): the fields
    rebuilt from the HTTP_ keys and CONTENT_TYPE/CONTENT_LENGTH, the request line from the method,
    the path and the query."""
    if not _environ_needs_inspection(environ, limits):
        return None
    fields = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-")
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.replace("_", "-")
        else:
            continue
        fields.append(("%s: %s" % (name, value)).encode("latin-1", "replace"))
    return inspect_parsed_head(_environ_request_line(environ), fields, limits)


def _environ_request_line(environ: dict[str, object]) -> int:
    """The length of the request line an environ came from (METHOD TARGET HTTP/x.y); a path sent
    with percent-escapes is counted decoded: a little shorter."""
    query = str(environ.get("QUERY_STRING") or "")
    target = len(str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))) + (len(query) + 1 if query else 0)
    return len(str(environ.get("REQUEST_METHOD", ""))) + 1 + target + 1 + len(str(environ.get("SERVER_PROTOCOL", "")))


def _environ_needs_inspection(environ: dict[str, object], limits: HeadLimits) -> bool:
    """Whether a parsed head (in an environ) may break a limit or frame its body ambiguously;
    False, the common case (a few short fields, no body), spares rebuilding its lines on every request."""
    if ("CONTENT_LENGTH" in environ or "HTTP_TRANSFER_ENCODING" in environ or "CONTENT_TYPE" in environ
            or "HTTP_CONTENT_LENGTH" in environ):  # a body's framing (a lax server may leave the last), or a body
        return True
    fields = 0
    longest = limits.max_header_field - 2  # a field line is 'Name: value'
    for key, value in environ.items():
        if key[:5] == "HTTP_":
            fields += 1
            if len(key) - 5 + len(str(value)) > longest:
                return True
    return fields > limits.max_headers or _environ_request_line(environ) > limits.max_request_line


def asgi_head_guard(app: ASGIApp, limits: HeadLimits) -> ASGIApp:
    """``app``, behind a check of each HTTP request's head (inspect_parsed_head): a refused one is
    answered here (status, explanation, Connection: close), and the app never sees it.

    A plain function returning the app's awaitable, not a coroutine of its own: it runs on every
    request, and an extra coroutine frame per request is a measurable share of a fast server's time
    (servers given it await what it returns; uvicorn is told the interface, so it does not guess)."""

    def guarded(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http" and _needs_inspection(scope, limits):
            refusal = inspect_parsed_head(_request_line_length(scope),
                                          [name + b": " + value for name, value in scope["headers"]], limits)
            if refusal is not None:
                return _refuse(send, refusal)
        return app(scope, receive, send)

    return guarded


def _needs_inspection(scope: Scope, limits: HeadLimits) -> bool:
    """Whether a parsed head may break a limit or frame its body ambiguously; False (the common
    case: a few short fields, no body framing) lets the request through without building its lines."""
    headers = scope["headers"]
    if len(headers) > limits.max_headers or _request_line_length(scope) > limits.max_request_line:
        return True
    longest = limits.max_header_field - 2  # the ": " between name and value
    for name, value in headers:
        if len(name) + len(value) > longest or len(name) in _FRAMING_NAME_LENGTHS or name[-1:] in _BLANKS:
            return True  # near a limit, a body's framing, or a name a lax parser left malformed
    return False


#: The last byte of an empty name (b"") or of one a lax parser kept a space or tab in.
_BLANKS = frozenset((b"", b" ", b"\t"))


#: The lengths of the names that frame a body (Content-Length, Transfer-Encoding): a field with
#: one of them gets the whole framing check, whatever its case.
_FRAMING_NAME_LENGTHS = frozenset((len(b"content-length"), len(b"transfer-encoding")))


def _request_line_length(scope: Scope) -> int:
    """The length of the request line the scope came from (METHOD TARGET HTTP/x.y)."""
    query = scope.get("query_string") or b""
    target = len(scope.get("raw_path") or scope["path"].encode("utf-8")) + (len(query) + 1 if query else 0)
    return len(scope["method"]) + 1 + target + len(" HTTP/") + len(scope.get("http_version", "1.1"))


async def _refuse(send: Send, refusal: Refusal) -> None:
    body = refusal.explanation.encode("latin-1") + b"\n"
    await send({"type": "http.response.start", "status": int(refusal.status[:3]),
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body)),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _too_long(lines: list[bytes]) -> Refusal:
    if not lines:
        return Refusal("414 URI Too Long", "The request line is too long.")
    return Refusal("431 Request Header Fields Too Large", "A header field is too long.")


def _framing(fields: list[bytes]) -> Refusal | None:
    """A Refusal if the fields leave the body's length ambiguous; None if they frame it one way."""
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    for field in fields:
        if field[:1] in (b" ", b"\t"):
            continue  # an obsolete line folding: a value's continuation, left to the server
        name, colon, value = field.partition(b":")
        if not colon or not name or name != name.strip():
            return Refusal("400 Bad Request", "Malformed header field %r." % name[:40].decode("latin-1"))
        name = name.lower()
        if name == b"content-length":
            for item in value.split(b","):
                item = item.strip(b" \t")
                if not _DECIMAL.fullmatch(item):
                    return Refusal("400 Bad Request", "Content-Length is not a decimal number.")
                lengths.add(item.lstrip(b"0") or b"0")
        elif name == b"transfer-encoding":
            codings.extend(c.strip(b" \t").lower() for c in value.split(b",") if c.strip(b" \t"))
    if len(lengths) > 1:
        return Refusal("400 Bad Request", "Differing Content-Length values.")
    if codings and lengths:
        return Refusal("400 Bad Request", "Both Content-Length and Transfer-Encoding.")
    if codings and codings[-1] != b"chunked":
        return Refusal("400 Bad Request", "Transfer-Encoding does not end in chunked.")
    return None


def refusal_response(refusal: Refusal) -> bytes:
    """The whole HTTP/1.1 response that refuses a head; the connection closes after it."""
    body = refusal.explanation.encode("latin-1") + b"\n"
    return (b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (refusal.status.encode("latin-1"), len(body), body))
