"""What route handlers see and answer: requests, responses, the router and basic auth.

Routes are plain functions ``Request -> Response`` and may block: the server runs them
in worker threads. A route can also have a *fast* part that answers on the server's
event loop without blocking (the cached exposition, the health checks), or returns None
to leave the request to the route. A *deferred* route starts on the event loop without
blocking and answers later, from any thread, through the ``Reply`` it is given: a push
hands its reports to the group commit and is answered by the commit's thread, so no
thread waits for the disk on its behalf. A large or compressed body would take the loop
too long to parse: such a request runs its deferred route in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import NamedTuple, Protocol

import structlog

log = structlog.get_logger("msgsms_exporter.web")


@dataclass(frozen=True, slots=True)
class Request:
    """What a route sees of an HTTP request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    def param(self, name: str, default: str = "") -> str:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(frozen=True, slots=True)
class Response:
    """What a route answers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def text(status: int, message: str) -> Response:
    """A plain-text response."""
    return Response(status, (message + "\n").encode())


def json_response(status: int, body: object) -> Response:
    """A JSON response."""
    return Response(status, json.dumps(body).encode() + b"\n", "application/json")


LOOP_BODY_BYTES = 16 * 1024
"""Bodies up to this size start on the event loop (a single report is under 2 KiB, a
batch of 50 short reports about 5 KiB); larger ones in a worker thread."""

Route = Callable[[Request], Response]
FastRoute = Callable[[Request], Response | None]
Reply = Callable[[Response], None]
"""Answers a deferred request; called exactly once, from any thread."""
DeferredRoute = Callable[[Request, Reply], None]
"""Starts a request on the event loop without blocking; it answers through the Reply."""
Problem = Callable[[int, str], Response]
"""Renders a refusal of the router or the server (404, 405, 401, 500) from its status and
message: a contract's JSON error body where plain text would break its clients."""


class Resolved(NamedTuple):
    """Where a request goes: an answer now (404, 405, a fast route's), a route to run in
    a worker thread, or a deferred route to start on the loop."""

    answer: Response | None
    route: Route | None
    reason: str = ""
    """Why the router itself refused (``not_found``, ``method_not_allowed``), if it did."""
    deferred: DeferredRoute | None = None


class Router:
    """Maps (method, path) to routes."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, tuple[Route, FastRoute | None]]] = {}
        self._deferred: dict[tuple[str, str], DeferredRoute] = {}
        self._problems: dict[str, Problem] = {}
        self._problem_prefixes: list[tuple[str, Problem]] = []

    def add(
        self,
        path: str,
        route: Route,
        methods: tuple[str, ...] = ("GET",),
        *,
        fast: FastRoute | None = None,
    ) -> None:
        """Serve ``route`` at ``path`` for ``methods`` (GET brings HEAD).

        ``fast``, if given, runs first on the event loop and must never block; when it
        returns None, ``route`` answers in a worker thread.
        """
        for method in methods:
            self._routes.setdefault(path, {})[method] = (route, fast)
            if method == "GET":
                self._routes[path]["HEAD"] = (route, fast)

    def add_deferred(
        self, path: str, start: DeferredRoute, methods: tuple[str, ...] = ("POST",)
    ) -> None:
        """Serve ``start`` at ``path``: it runs on the event loop (in a worker thread when
        the body is large or compressed), must never block, and answers through the Reply
        it is given (from any thread)."""
        for method in methods:
            self._deferred[(path, method)] = start
            self.add(path, blocking(start), (method,))

    def speak(self, problem: Problem, *, paths: tuple[str, ...] = (), under: str = "") -> None:
        """Render the refusals of ``paths``, and of every path starting with ``under``
        (served or not), with ``problem`` instead of plain text."""
        for path in paths:
            self._problems[path] = problem
        if under:
            self._problem_prefixes.append((under, problem))

    def refusal(
        self, path: str, status: int, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        """The router's or the server's refusal of a request for ``path``, in its language."""
        path = route_path(path)
        problem = self._problems.get(path)
        if problem is None:
            found = (p for prefix, p in self._problem_prefixes if path.startswith(prefix))
            problem = next(found, text)
        response = problem(status, message)
        return replace(response, headers={**response.headers, **headers}) if headers else response

    def resolve(self, request: Request) -> Resolved:
        """The answer if it is known without blocking, else the route that will give it."""
        path = route_path(request.path)
        deferred = self._deferred.get((path, request.method))
        if deferred is not None and _light(request):
            return Resolved(None, None, "", deferred)
        routes = self._routes.get(path)
        if routes is None:
            return Resolved(self.refusal(path, 404, "not found"), None, "not_found")
        found = routes.get(request.method)
        if found is None:
            allow = ", ".join(sorted(routes))
            message = f"method {request.method} is not allowed here; use {allow}"
            refusal = self.refusal(path, 405, message, {"Allow": allow})
            return Resolved(refusal, None, "method_not_allowed")
        route, fast = found
        answer = fast(request) if fast is not None else None
        return Resolved(answer, None if answer is not None else route)

    def dispatch(self, request: Request) -> Response:
        """The route's response, 404 or 405; a route's bug becomes a 500, never a crash."""
        return self.answer(request)[0]

    def answer(self, request: Request) -> tuple[Response, str]:
        """Like :meth:`dispatch` (blocking), with the router's refusal reason, if any."""
        resolved = self.resolve(request)
        if resolved.deferred is not None:
            return self.call(partial(_wait_for_reply, resolved.deferred), request)
        if resolved.route is None:
            assert resolved.answer is not None
            return resolved.answer, resolved.reason
        return self.call(resolved.route, request)

    def call(self, route: Route, request: Request) -> tuple[Response, str]:
        """:func:`call_route`, its 500 rendered in the path's language."""
        response, reason = call_route(route, request)
        if reason == "internal_error":
            response = self.refusal(request.path, 500, "internal error")
        return response, reason


def _light(request: Request) -> bool:
    """True when a deferred route may start on the loop: its body is small and not
    compressed. Parsing a megabyte (a form of 170,000 fields, or a gzip bomb's worth)
    takes the loop a second; such a request starts in a worker thread instead."""
    if len(request.body) > LOOP_BODY_BYTES:
        return False
    coding = request.headers.get("content-encoding")
    return coding is None or coding.strip().lower() in ("", "identity")


def route_path(path: str) -> str:
    """The path a request is routed by: runs of ``/`` count as one, as nginx merges them
    (a callback URL built as ``https://host/`` + ``/push/status-report`` reaches the
    receiver), and a percent-encoded unreserved character is that character
    (``status%2Dreport``: the same URI, RFC 3986 6.2.2.2; nginx routes it so).
    The request keeps its path as sent: a signature covers that one."""
    if "%" in path:
        path = _ESCAPED_UNRESERVED.sub(lambda m: chr(int(m[1], 16)), path)
    while "//" in path:
        path = path.replace("//", "/")
    return path


_ESCAPED_UNRESERVED = re.compile(
    "%(" + "|".join(f"{ord(c):02X}" for c in string.ascii_letters + string.digits + "-._~") + ")",
    re.IGNORECASE,
)
"""A percent-escape of an unreserved character (RFC 3986 2.3), never of ``/`` or ``%``."""


def blocking(start: DeferredRoute) -> Route:
    """A deferred route as a blocking one: it waits in its worker thread for the reply."""
    return partial(_wait_for_reply, start)


def _wait_for_reply(start: DeferredRoute, request: Request) -> Response:
    """A deferred route run as a blocking one (in a worker thread, or by ``dispatch``)."""
    answered = threading.Event()
    answers: list[Response] = []

    def reply(response: Response) -> None:
        answers.append(response)
        answered.set()

    start(request, reply)
    answered.wait()
    return answers[0]


def call_route(route: Route, request: Request) -> tuple[Response, str]:
    """Run a route; its bug becomes a logged 500 (reason ``internal_error``), never a crash."""
    try:
        return route(request), ""
    except Exception:
        log.exception("request handler failed", path=request.path)
        return text(500, "internal error"), "internal_error"


class Authenticator(Protocol):
    """Checks a user name and password (``webconfig.BasicAuth``)."""

    def check(self, user: str, password: str) -> bool:
        """True when the credentials are valid (may take a slow password hash)."""
        ...

    def cached(self, user: str, password: str) -> bool | None:
        """The verdict on credentials checked before, or None: a cheap check."""
        ...


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """The user and password of an ``Authorization: Basic`` value; None for anything else."""
    if header is None:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def known_to_be_authorized(auth: Authenticator | None, header: str | None) -> bool:
    """True when no auth is configured or ``header`` carries credentials already verified:
    decided without the password hash, so it may run on the event loop."""
    if auth is None:
        return True
    credentials = basic_credentials(header)
    return credentials is not None and auth.cached(*credentials) is True
