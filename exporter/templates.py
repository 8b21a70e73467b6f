"""Huawei's real template list, ``GET /v2/{project_id}/msgsms/templates``: its data and shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.errors import UpstreamMalformed
from exporter.records import page_frame

TEMPLATES_PATH = "/v2/{project_id}/msgsms/templates"
TEMPLATE_PAGE_LIMIT = 500


@dataclass(frozen=True, slots=True)
class SmsTemplate:
    """One SMS template as the template list describes it."""

    template_id: str
    template_name: str
    template_type: str
    flow_status: str = ""
    region: str = ""


@dataclass(frozen=True, slots=True)
class TemplatePage:
    """One page of the template list."""

    total: int
    templates: list[SmsTemplate]


def parse_template_page(body: object) -> TemplatePage:
    """Validate a template-list page; UpstreamMalformed when it is not the real shape."""
    total, results = page_frame(body, "template list", "results")
    templates = []
    for index, item in enumerate(results):
        if not isinstance(item, Mapping) or not isinstance(item.get("template_id"), str):
            raise UpstreamMalformed(f"template list results[{index}] has no template_id")
        templates.append(
            SmsTemplate(
                template_id=item["template_id"],
                template_name=str(item.get("template_name") or item["template_id"]),
                template_type=str(item.get("template_type") or ""),
                flow_status=str(item.get("flow_status") or ""),
                region=str(item.get("region") or ""),
            )
        )
    return TemplatePage(total=total, templates=templates)
