"""What a reload records and reads again beside the configuration: the outcome gauges,
and the web config's TLS context and users.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily

from exporter.errors import ConfigError
from exporter.routing import Authenticator
from exporter.snapshot import Generation
from exporter.webconfig import load_web_config


class ReloadCollector:
    """``msgsms_config_last_reload_successful`` and its success timestamp.

    msgsms_config_last_reload_successful 1
    msgsms_config_last_reload_success_timestamp_seconds 1.7641512e+09
    """

    def __init__(self, started: float, generation: Generation) -> None:
        self.successful = True
        self.success_at = started
        self._generation = generation

    def record(self, successful: bool, at: float) -> None:
        """Note a reload's outcome (``at``: when, for a success)."""
        self.successful = successful
        if successful:
            self.success_at = at
        self._generation.bump()

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """Same families as collect()."""
        return self.collect()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """The outcome of the last configuration reload (start-up counts as one)."""
        yield GaugeMetricFamily(
            "msgsms_config_last_reload_successful",
            "1 when the last configuration reload succeeded.",
            value=1 if self.successful else 0,
        )
        yield GaugeMetricFamily(
            "msgsms_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            value=self.success_at,
        )


def reload_web_access(
    path: str, tls_on: bool, problems: list[str]
) -> tuple[ssl.SSLContext | None, Authenticator | None] | None:
    """The web config at ``path`` read again: its TLS context and users, or None with the
    problems appended (TLS cannot be turned on or off without a restart)."""
    try:
        web = load_web_config(path)
        tls = web.tls.context() if web.tls is not None else None
    except ConfigError as error:
        problems += error.problems
        return None
    except (OSError, ValueError) as error:  # ssl.SSLError: a key that does not match
        problems.append(f"{path}: tls_server_config: {error}")
        return None
    if (tls is not None) != tls_on:
        problems.append(f"{path}: turning TLS on or off needs a restart")
        return None
    return tls, web.auth()
