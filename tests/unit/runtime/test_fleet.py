"""serve --workers N's one /metrics: every serving process's samples, labelled by its place."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from receiver.runtime.fleet import merge_expositions

ONE = """# HELP receiver_requests_total Webhook requests received, by source
# TYPE receiver_requests_total counter
receiver_requests_total{source="pucomex"} 3.0
# HELP receiver_oldest_pending_job_age_seconds Age
# TYPE receiver_oldest_pending_job_age_seconds gauge
receiver_oldest_pending_job_age_seconds 7.0
"""
TWO = ONE.replace("} 3.0", "} 5.0").replace("seconds 7.0", "seconds 9.0")


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_each_process_s_samples_are_kept_apart_by_a_process_label() -> None:
    merged = merge_expositions([("1", ONE), ("2", TWO), ("3", None)])
    found = samples(merged)
    assert found[("receiver_requests_total", (("process", "1"), ("source", "pucomex")))] == 3
    assert found[("receiver_requests_total", (("process", "2"), ("source", "pucomex")))] == 5
    assert found[("receiver_oldest_pending_job_age_seconds", (("process", "2"),))] == 9
    assert found[("receiver_serving_process_up", (("process", "1"),))] == 1
    assert found[("receiver_serving_process_up", (("process", "3"),))] == 0
    # One family per name, as Prometheus requires (a second TYPE line fails the scrape).
    assert merged.decode().count("# TYPE receiver_requests_total counter") == 1
