"""Whose a push is: the account its path or signing key names, and the template it counts
under (a report's from its ``extend``, within the template limit, else ``other``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from exporter.config import ReceiverConfig
from exporter.errors import PushRejected
from exporter.pushparse import template_from_extend
from exporter.pushstats import ReceiverStats
from exporter.pushstore import SendRegistration, StatusReport
from exporter.pushtemplates import OTHER_TEMPLATE, TemplateLimit


class Attributor:
    """Attributes pushes to accounts and templates, counting what the limit folds."""

    def __init__(
        self,
        config: ReceiverConfig,
        accounts: tuple[str, ...],
        templates: TemplateLimit,
        stats: ReceiverStats,
    ) -> None:
        self.config = config
        self.templates = templates
        self.stats = stats
        self._accounts = accounts
        self._key_accounts: Mapping[str, str] = dict(config.key_accounts)

    def account(self, by_path: str | None, access_key: str | None) -> str:
        """The account named by the path or bound to the signing key ("" with one account)."""
        by_key = self._key_accounts.get(access_key) if access_key is not None else None
        if by_key is not None and by_path is not None and by_key != by_path:
            raise PushRejected(
                "wrong_account", f"the signing key is not account {by_path!r}'s key", 403
            )
        found = by_path or by_key
        if found is not None:
            return found
        if len(self._accounts) <= 1:
            return self._accounts[0] if self._accounts else ""
        raise PushRejected(
            "wrong_account", "the signing key names no account; push to the account's path", 403
        )

    def admit(self, send: SendRegistration) -> SendRegistration:
        """A registration with its template admitted, or folded into ``other``."""
        template = self.templates.admit(send.template_id)
        if template == send.template_id:
            return send
        with self.stats.lock:
            self.stats.folded["registration"] += 1
        return replace(send, template_id=template)

    def attribute(self, report: StatusReport, account: str) -> StatusReport:
        """A report with its account and the template its ``extend`` names, if any."""
        named = template_from_extend(
            report.extend, self.config.attribution, self.config.attribution_key
        )
        template = self.templates.admit(named) if named else None
        if template == OTHER_TEMPLATE:
            with self.stats.lock:
                self.stats.folded["report"] += 1
        # Built field by field: dataclasses.replace costs more than the rest of this.
        r = report
        return StatusReport(
            *(r.message_id, r.status, r.sequence, r.total, r.status_desc, r.update_time),
            *(r.source, r.extend, template, account),
        )
