"""The template list as Huawei serves it, checked with Huawei's own SDK and its response models."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkmsgsms.v2 import (
    ListTemplateDetailsRequest,
    MsgsmsClient,
    ShowTemplateRequest,
)
from huaweicloudsdkmsgsms.v2.model import ShowTemplateResponse, SmsTemplateResp, TenantBasic

from exporter.errors import ConfigError
from exporter.simulator import SimulatorConfig, start_simulator
from exporter.simulator.catalog import list_templates
from exporter.simulator.runner import RunningSimulator
from exporter.simulator.scenario import load_scenario, parse_scenario
from exporter.simulator.template_specs import MAINLAND
from exporter.templates import parse_template_page

PROJECT = "0123456789abcdef0123456789abcdef"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SDK_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,)}


@pytest.fixture(scope="module")
def simulator() -> Iterator[RunningSimulator]:
    with start_simulator(SimulatorConfig(rate_limit=0)) as running:
        yield running


def sdk_client(url: str, secret_key: str = "demo-secret-key") -> MsgsmsClient:
    config = HttpConfig.get_default_config()
    config.retry_times = 0  # an error must reach the test, not be retried
    credentials = BasicCredentials("demo-access-key", secret_key, PROJECT)
    return (
        MsgsmsClient.new_builder()
        .with_http_config(config)
        .with_credentials(credentials)
        .with_endpoint(url)  # plain http on loopback: the SDK signs it all the same
        .build()
    )


def raw_list(url: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{url}/v2/{PROJECT}/msgsms/templates",
        params=params,
        headers={"X-Auth-Token": "demo-token"},
    )


def check_against_model(value: Any, model: Any, where: str) -> None:
    """Every field of the SDK's model present, each of the model's type (or null)."""
    assert isinstance(value, dict), where
    assert set(value) == set(model.attribute_map.values()), where
    for attr, kind in model.openapi_types.items():
        item = value[model.attribute_map[attr]]
        if kind == "TenantBasic":
            check_against_model(item, TenantBasic, f"{where}.{attr}")
        elif item is not None:
            assert isinstance(item, SDK_TYPES[kind]), f"{where}.{attr}: {item!r}"
            assert kind == "bool" or not isinstance(item, bool), f"{where}.{attr}"


def test_the_sdk_pages_through_every_template_newest_first(simulator: RunningSimulator) -> None:
    client = sdk_client(simulator.url)
    seen: list[SmsTemplateResp] = []
    while True:
        page = client.list_template_details(ListTemplateDetailsRequest(limit=4, offset=len(seen)))
        seen.extend(page.results)
        if len(seen) >= page.total:
            break
    assert page.total == len(seen) == 6
    assert {t.template_id for t in seen} == {t.template_id for t in load_scenario().templates}
    created = [t.create_time for t in seen]
    assert created == sorted(created, reverse=True) and len(set(created)) == 6
    assert all(UUID.match(t.id) for t in seen)
    assert len({t.id for t in seen}) == 6
    oldest = client.list_template_details(
        ListTemplateDetailsRequest(limit=1, sort_key="create_time", sort_dir="asc")
    )
    assert oldest.results[0].create_time == created[-1]


def test_the_sdk_shows_each_listed_template_by_its_primary_key(
    simulator: RunningSimulator,
) -> None:
    client = sdk_client(simulator.url)
    listed = raw_list(simulator.url, limit="500").json()["results"]
    for result in listed:
        shown = client.show_template(ShowTemplateRequest(id=result["id"]))
        assert shown.to_json_object() == result
        assert (shown.template_id, shown.template_name) == (
            result["template_id"],
            result["template_name"],
        )
        assert shown.tenant.customer_name == result["tenant"]["customer_name"]
        raw = httpx.get(
            f"{simulator.url}/v2/{PROJECT}/msgsms/templates/{result['id']}",
            headers={"X-Auth-Token": "demo-token"},
        ).json()
        assert raw == result
        check_against_model(raw, ShowTemplateResponse, result["id"])


def test_showing_a_template_that_does_not_exist_is_huaweis_not_found_error(
    simulator: RunningSimulator,
) -> None:
    client = sdk_client(simulator.url)
    template_id = load_scenario().templates[0].template_id  # the sending id, not the key
    for key in (template_id, "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(ClientRequestException) as missing:
            client.show_template(ShowTemplateRequest(id=key))
        assert (missing.value.status_code, missing.value.error_code) == (400, "MSGSMS.0036")
        assert missing.value.error_msg == "Message template is not found"
        assert missing.value.request_id
    other_project = httpx.get(
        f"{simulator.url}/v2/{'f' * 32}/msgsms/templates/{template_id}",
        headers={"X-Auth-Token": "demo-token"},
    )
    assert (other_project.status_code, other_project.json()["error_code"]) == (
        404,
        "MSGSMS.0404",
    )
    put = httpx.put(
        f"{simulator.url}/v2/{PROJECT}/msgsms/templates/{template_id}",
        headers={"X-Auth-Token": "demo-token"},
    )
    assert (put.status_code, put.headers["Allow"]) == (405, "GET, HEAD")


def test_every_result_carries_the_sdk_models_fields_with_their_types(
    simulator: RunningSimulator,
) -> None:
    body = raw_list(simulator.url, limit="500").json()
    assert set(body) == {"results", "total"}
    for index, result in enumerate(body["results"]):
        check_against_model(result, SmsTemplateResp, f"results[{index}]")
        assert result["has_variable"] == ("Yes" if "${" in result["template_content"] else "No")
        assert result["create_time"] < result["update_time"]
        signed = result["region"] == "cn"
        assert (result["sign_id"] is not None, result["brackets"]) == (
            signed,
            "CN" if signed else "GB",
        )
    # The exporter reads the same answer: string ids and all.
    parsed = parse_template_page(body)
    assert [t.template_id for t in parsed.templates] == [r["template_id"] for r in body["results"]]


def test_international_templates_are_notify_type_and_countries_fit_the_region(
    simulator: RunningSimulator,
) -> None:
    for result in raw_list(simulator.url, limit="500").json()["results"]:
        if result["region"] == "intl":
            assert result["template_type"] == "NOTIFY_TYPE"
            assert int(MAINLAND) not in (result["send_country1"], result["send_country2"])
        else:
            assert (result["send_country1"], result["send_country2"]) == (int(MAINLAND), None)
            assert result["country_name"] == "Chinese mainland"
    for scenario in (load_scenario(), load_scenario("load")):
        for spec in scenario.templates:
            assert spec.region == "cn" or spec.template_type == "NOTIFY_TYPE"
            assert (spec.countries == (MAINLAND,)) == (spec.region == "cn")


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        (
            {"template_id": "T", "type": "VERIFY_CODE_TYPE", "region": "intl"},
            "templates[0].type: an intl template is NOTIFY_TYPE only",
        ),
        (
            {"template_id": "T", "type": "VERIFY_CODE_TYPE", "countries": ["44"]},
            "templates[0].countries: a cn template sends to 86 only",
        ),
        (
            {"template_id": "T", "countries": ["44", "86"]},
            "templates[0].countries: an intl template cannot send to 86",
        ),
        (
            {"template_id": "T", "flow_status": "Approved"},
            "templates[0].flow_status: expected one of Adopted, Reviewing, Reject, Disable,"
            " Pending, Adopted_inactive, SignReviewing",
        ),
        (
            {"template_id": "T", "create_time": "2026-01-05"},
            "templates[0].create_time: expected yyyy-MM-dd HH:mm:ss",
        ),
    ],
)
def test_a_scenario_template_huawei_would_not_have_is_refused(
    template: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_scenario({"templates": [template]})
    assert err.value.problems == [problem]


def test_the_sdk_gets_the_errors_with_their_code_and_request_id(
    simulator: RunningSimulator,
) -> None:
    client = sdk_client(simulator.url)
    with pytest.raises(ClientRequestException) as refused:
        client.list_template_details(ListTemplateDetailsRequest(flow_status="Approved"))
    assert (refused.value.status_code, refused.value.error_code) == (400, "MSGSMS.0002")
    assert refused.value.error_msg == "Invalid Parameter."
    assert re.match(r"^[0-9a-f]{32}$", refused.value.request_id)
    with pytest.raises(ClientRequestException) as unsigned:
        sdk_client(simulator.url, secret_key="wrong").list_template_details(
            ListTemplateDetailsRequest()
        )
    assert (unsigned.value.status_code, unsigned.value.error_code) == (401, "APIG.0301")
    assert unsigned.value.request_id


SCENARIO = load_scenario()
NAMES = {t.template_id: t.name for t in SCENARIO.templates}


def names(**params: str) -> list[str]:
    body = list_templates(SCENARIO, {k: [v] for k, v in params.items()})
    assert body["total"] == len(body["results"]) or "limit" in params
    return [r["template_name"] for r in body["results"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"limit": "500"},
            [
                "Password reset",
                "International sender check",
                "Weekend promotion",
                "Delivery status update",
                "Payment confirmation",
                "Login verification code",
            ],
        ),
        ({"template_name": "PROMOTION"}, ["Weekend promotion"]),
        ({"template_type": "VERIFY_CODE_TYPE"}, ["Password reset", "Login verification code"]),
        ({"region": "cn", "template_type": "NOTIFY_TYPE"}, []),
        (
            {"region": "intl"},
            ["International sender check", "Delivery status update", "Payment confirmation"],
        ),
        (
            {"flow_status": "Adopted", "limit": "2"},
            ["Password reset", "International sender check"],
        ),
        ({"flow_status": "Reviewing"}, []),
        ({"app_name": "simulator"}, list(reversed(NAMES.values()))),
        ({"app_name": "another-app"}, []),
        ({"app_key": "x"}, []),
        (
            {"sign_name": "simul"},
            ["Password reset", "Weekend promotion", "Login verification code"],
        ),
        ({"has_variable": "No"}, []),
        (  # created 2026-01-05 09:30, then every three days; both bounds inclusive
            {"start_time": "2026-01-08 09:30:01", "end_time": "2026-01-14 09:30:00"},
            ["Weekend promotion", "Delivery status update"],
        ),
        (
            {"sort_key": "create_time", "sort_dir": "asc", "limit": "2"},
            ["Login verification code", "Payment confirmation"],
        ),
    ],
)
def test_the_filters_select_as_huawei_does(params: dict[str, str], expected: list[str]) -> None:
    assert names(**params) == expected


def test_the_app_key_filter_finds_the_templates_of_that_app() -> None:
    key = list_templates(SCENARIO, {})["results"][0]["app_key"]
    assert len(names(app_key=key, limit="500")) == 6


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"flow_status": "Approved"}, "flow_status: expected one of Adopted, Reviewing, Reject"),
        ({"template_type": "SPAM"}, "template_type: expected one of VERIFY_CODE_TYPE"),
        ({"region": "eu"}, "region: expected one of cn, intl"),
        ({"sort_key": "template_name"}, "sort_key: expected one of create_time"),
        ({"sort_dir": "up"}, "sort_dir: expected one of asc, desc"),
        ({"has_variable": "yes"}, "has_variable: expected one of Yes, No"),
        ({"start_time": "2026-01-08T00:00:00Z"}, "start_time: expected yyyy-MM-dd HH:mm:ss"),
        (
            {"start_time": "2026-02-01 00:00:00", "end_time": "2026-01-01 00:00:00"},
            "end_time: must not be before start_time",
        ),
        ({"limit": "501"}, "limit: expected an integer in [1, 500]"),
        ({"offset": "-1"}, "offset: expected an integer in [0, 1000000000]"),
    ],
)
def test_refused_filters_are_400_invalid_parameter_naming_the_filter(
    simulator: RunningSimulator, params: dict[str, str], detail: str
) -> None:
    response = raw_list(simulator.url, **params)
    assert response.status_code == 400
    body = response.json()
    assert (body["error_code"], body["error_msg"]) == ("MSGSMS.0002", "Invalid Parameter.")
    assert body["error_detail"].startswith(detail)
    assert len(response.headers["X-Request-Id"]) == 32
