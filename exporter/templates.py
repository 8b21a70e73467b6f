"""Huawei's real template list, ``GET /v2/{project_id}/msgsms/templates``: its data and shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.errors import UpstreamMalformed

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
    if not isinstance(body, Mapping):
        raise UpstreamMalformed("template list body is not a JSON object")
    total = body.get("total")
    results = body.get("results")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise UpstreamMalformed("template list 'total' is not a non-negative integer")
    if not isinstance(results, list):
        raise UpstreamMalformed("template list 'results' is not a list")
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
