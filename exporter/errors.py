"""The exporter's one small exception tree.

    ExporterError
     ├── ConfigError            invalid configuration; carries every problem found
     ├── SignatureError         a request signature is missing, malformed or wrong
 ├── AuthError              the simulated API gateway refuses a request; carries its code
     ├── RecordError            one upstream record is malformed; carries a reason label
     ├── PushRejected           a push, or one item of it, is refused; carries a reason label
     ├── StoreUnavailable       the push store could not commit a write (answer 503)
     ├── BadParameter           a sending-details query parameter is missing or invalid
     ├── FormError              the /details form is invalid; the message is shown as is
     ├── DetailsBusy            another sending-details query of the account is running
     ├── BudgetExhausted        the poll's request budget is spent; the rest waits
     └── UpstreamError          the sending-details service did not give a usable answer
          ├── UpstreamUnavailable   connection failure, timeout, 5xx
          ├── UpstreamRejected      4xx: bad credentials, bad request, throttling
          └── UpstreamMalformed     the body is not the contract's shape

httpx errors are translated into this tree in one place (``exporter.client``).
"""

from __future__ import annotations


class ExporterError(Exception):
    """Base of every error the exporter raises on purpose."""


class ConfigError(ExporterError):
    """The configuration is invalid; ``problems`` lists every located message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class SignatureError(ExporterError):
    """A request's SDK-HMAC-SHA256 signature is missing, malformed or wrong."""


class AuthError(ExporterError):
    """The simulator's API gateway refuses a request as unauthenticated; ``error_code``
    is the gateway's (``APIG.0301``...)."""

    def __init__(self, error_code: str, message: str) -> None:
        self.error_code = error_code
        super().__init__(message)


class RecordError(ExporterError):
    """One upstream record is malformed; ``reason`` is a bounded label value."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class PushRejected(ExporterError):
    """A push (or one item of a batch) is not acceptable; ``reason`` is a bounded label,
    ``error_code`` the contract's code when the answer follows the details contract."""

    def __init__(
        self, reason: str, message: str, status: int = 400, *, error_code: str = ""
    ) -> None:
        self.reason = reason
        self.status = status
        self.error_code = error_code
        super().__init__(message)


class StoreUnavailable(ExporterError):
    """The push store could not commit a write; the caller should answer 503."""


class BadParameter(ExporterError):
    """A query parameter is missing or invalid; the message names it, ``error_code`` the rule."""

    error_code = "MSGSMS.0400"

    def __init__(self, message: str, error_code: str | None = None) -> None:
        if error_code is not None:
            self.error_code = error_code
        super().__init__(message)


class FormError(ExporterError):
    """The details form is invalid; the message is shown to the user as is."""


class DetailsBusy(ExporterError):
    """Another sending-details query of the same account is running."""


class BudgetExhausted(ExporterError):
    """The poll's request budget is spent; the rest waits for the next poll."""


class RequestRefused(ExporterError):
    """A request the HTTP layer answers itself (``status``), then closes the connection;
    ``reason`` names it in ``msgsms_http_requests_rejected_total``."""

    def __init__(self, reason: str, message: str, status: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


UPSTREAM_REASONS = ("unavailable", "rejected", "malformed")
"""The ``reason`` of each kind of UpstreamError: why a poll failed."""


class UpstreamError(ExporterError):
    """The sending-details service did not give a usable answer."""

    reason = "error"

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class UpstreamUnavailable(UpstreamError):
    """Connection failure, timeout or server error."""

    reason = "unavailable"


class UpstreamRejected(UpstreamError):
    """The service refused the request (4xx)."""

    reason = "rejected"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.error_code = error_code

    @property
    def throttled(self) -> bool:
        """True when the service asked us to slow down (HTTP 429)."""
        return self.status == 429


class UpstreamMalformed(UpstreamError):
    """The response body does not follow the contract."""

    reason = "malformed"
