from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import DeliveryCollector
from exporter.ledger import Tally
from exporter.records import SendResult
from exporter.snapshot import AccountSnapshot, WindowSnapshot, summarize
from exporter.status_codes import StatusCategory
from exporter.templates import SmsTemplate


def _exposition(*snapshots):
    registry = CollectorRegistry()
    registry.register(DeliveryCollector(lambda: list(snapshots)))
    return generate_latest(registry).decode()


def _snapshot(**overrides):
    tally = Tally(success=2, failed=1, sending=1, codes={"DELIVRD": 2, "E200018": 1})
    tally.delay_counts[0] = 1
    tally.delay_counts[3] = 1
    tally.delay_sum_ms = 8500
    window = WindowSnapshot("1h", 3600.0, 7200.0, True, (summarize("T1", tally, 10),))
    fields = {
        "account": "main",
        "up": True,
        "poll_interval": 60.0,
        "templates": (SmsTemplate("T1", "Login code", "VERIFY_CODE_TYPE"),),
        "windows": (window,),
        "last_success": 7201.0,
        "poll_duration": 0.25,
        "sent_total": {"T1": 4},
        "finalized_total": {("T1", SendResult.SUCCESS, StatusCategory.DELIVERED): 2},
    }
    fields.update(overrides)
    return AccountSnapshot(**fields)


def test_exports_window_counts_for_every_result():
    text = _exposition(_snapshot())
    assert (
        'msgsms_window_messages{account="main",result="success",template="T1",window="1h"} 2.0'
        in text
    )
    assert (
        'msgsms_window_messages{account="main",result="failed",template="T1",window="1h"} 1.0'
        in text
    )
    assert (
        'msgsms_window_messages{account="main",result="sending",template="T1",window="1h"} 1.0'
        in text
    )


def test_exports_status_codes_with_their_category():
    text = _exposition(_snapshot())
    assert (
        'msgsms_window_status_code_messages{account="main",category="platform_config",'
        'status_code="E200018",template="T1",window="1h"} 1.0'
    ) in text


def test_exports_delivery_delay_as_a_gauge_histogram():
    text = _exposition(_snapshot())
    assert "# TYPE msgsms_window_delivery_delay_seconds histogram" in text
    assert (
        'msgsms_window_delivery_delay_seconds_bucket{account="main",le="1.0",template="T1",window="1h"} 1.0'
        in text
    )
    assert (
        'msgsms_window_delivery_delay_seconds_bucket{account="main",le="+Inf",template="T1",window="1h"} 2.0'
        in text
    )
    assert (
        'msgsms_window_delivery_delay_seconds_gsum{account="main",template="T1",window="1h"} 8.5'
        in text
    )


def test_exports_zero_filled_counters_for_every_outcome():
    text = _exposition(_snapshot())
    assert (
        'msgsms_messages_finalized_total{account="main",category="delivered",result="success",template="T1"} 2.0'
        in text
    )
    assert (
        'msgsms_messages_finalized_total{account="main",category="platform_config",result="failed",template="T1"} 0.0'
        in text
    )
    assert 'msgsms_messages_sent_total{account="main",template="T1"} 4.0' in text


def test_exports_window_bounds_and_self_metrics():
    text = _exposition(_snapshot())
    assert 'msgsms_window_start_timestamp_seconds{account="main",window="1h"} 3600.0' in text
    assert 'msgsms_window_end_timestamp_seconds{account="main",window="1h"} 7200.0' in text
    assert 'msgsms_up{account="main"} 1.0' in text
    assert (
        'msgsms_template_info{account="main",template="T1",template_name="Login code",template_type="VERIFY_CODE_TYPE"} 1.0'
        in text
    )
    assert 'msgsms_build_info{version="0.1.0"} 1.0' in text


def test_a_down_account_without_windows_keeps_self_metrics_only():
    text = _exposition(_snapshot(up=False, windows=()))
    assert 'msgsms_up{account="main"} 0.0' in text
    assert "msgsms_window_messages{" not in text
    assert 'msgsms_last_poll_success_timestamp_seconds{account="main"} 7201.0' in text
