"""The sending-details contract served from the push store (``details_api: true``).

``GET /api/v1/send-details`` answered as the simulator answers it, refusals included: in
the contract's error shape, each named by an ``X-Request-Id``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from exporter.contract import (
    BadParameter,
    QueryLimits,
    error_code_for,
    error_to_wire,
    page_to_wire,
    parse_details_query,
)
from exporter.errors import PushRejected, UpstreamError
from exporter.pushstore import ReportStore
from exporter.routing import Request, Response, json_response


class DetailsApi:
    """The contract's one route over the push store; refusals raise PushRejected."""

    def __init__(self, store: ReportStore, clock: Callable[[], float], limits: QueryLimits) -> None:
        self._store = store
        self._clock = clock
        self._limits = limits

    def answer(self, request: Request, _account: str | None) -> Response:
        """``GET /api/v1/send-details`` answered from the store, as the simulator does."""
        try:
            query = parse_details_query(request.query, self._clock(), self._limits)
            page = self._store.query(query)
        except BadParameter as exc:
            raise PushRejected("bad_parameter", str(exc), error_code=exc.error_code) from exc
        except UpstreamError as exc:
            raise PushRejected("store_unavailable", str(exc), 503) from exc
        return _contract_answer(200, page_to_wire(query, page))


def _contract_answer(status: int, body: object) -> Response:
    """An answer of the sending-details contract: JSON, named by an ``X-Request-Id``."""
    response = json_response(status, body)
    response.headers["X-Request-Id"] = uuid.uuid4().hex
    return response


def contract_problem(exc: PushRejected) -> Response:
    """A refusal in the sending-details contract's error shape."""
    code = exc.error_code or error_code_for(exc.status)
    response = _contract_answer(exc.status, error_to_wire(code, str(exc)))
    if exc.status == 503:  # the store is down: the contract's 503 says when to come back
        response.headers["Retry-After"] = "1"
    return response


def contract_refusal(status: int, message: str) -> Response:
    """The router's and the server's refusals (404, 405, 401, 500) under ``/api/``."""
    if status == 404:
        message = "The API does not exist or has not been published."
    return contract_problem(PushRejected("", message, status))
