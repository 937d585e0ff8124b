"""deploy/prometheus/alerts.yml checked by the real promtool (Debian's package prometheus;
.ci/run installs it when missing): the rules parse, and each fires on the series that should
fire it (deploy/prometheus/alerts_test.yml). The rules and deploy/grafana/receiver.json name only
metrics the receiver exports (receiver/metrics.py, and the supervisor's merged exposition)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from receiver import metrics

ROOT = Path(__file__).parents[3]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "receiver.json"
# What `serve --workers N`'s supervisor adds to the merged exposition (receiver.runtime.fleet).
FLEET_METRICS = {"receiver_serving_process_up"}
# The receiver's rules in receiver.yaml (receiver.alerts.rules) and their Prometheus twins.
TWINS = {
    "subscription_inactive": "ReceiverSubscriptionInactive",
    "subscription_failing": "ReceiverSubscriptionFailing",
    "unstored_failures": "ReceiverUnstoredFailures",
    "dead_letters": "ReceiverNewDeadLetters",
    "quarantined": "ReceiverNewQuarantined",
    "ingest_silent": "ReceiverIngestSilent",
    "store_refusing_writes": "ReceiverStoreRefusingWrites",
    "oldest_pending": "ReceiverOldestPending",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: .ci/run installs it with apt-get (prometheus)")
        pytest.skip("promtool is not installed: apt-get install prometheus (.ci/run does it in CI)")
    return found


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_each_rule_fires_when_it_should_and_only_then() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(RULES_TEST)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULES_TEST.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = {
        case["alertname"]
        for group in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in group["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == {rule["alert"] for rule in rules()}


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def exported_names() -> set[str]:
    """Every sample name the receiver's registry can expose, from each family's name and type."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names = set(FLEET_METRICS)
    for family in metrics.REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


METRIC = re.compile(r"\breceiver_[a-z0-9_]+")


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
    return queries


def test_the_rules_and_the_dashboard_name_only_metrics_that_exist() -> None:
    known = exported_names()
    assert "receiver_stored_total" in known and "receiver_alerts_firing" in known
    used: dict[str, set[str]] = {}
    for rule in rules():
        used.setdefault(str(RULES.name), set()).update(METRIC.findall(rule["expr"]))
    for query in dashboard_queries():
        used.setdefault(str(DASHBOARD.name), set()).update(METRIC.findall(query))
    for where, names in used.items():
        assert names, where
        assert names <= known, (
            f"{where} names metrics the receiver does not export: {names - known}"
        )
    # The dashboard shows every metric family at least once.
    families = {name for name in known if not name.endswith("_created")}
    shown = used[str(DASHBOARD.name)]
    bases = {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in shown}
    missing = {
        name for name in families if re.sub(r"_(bucket|sum|count|total)$", "", name) not in bases
    }
    assert missing == set()


def test_every_receiver_rule_has_a_prometheus_twin() -> None:
    from receiver.alert_settings import AlertSettings
    from receiver.alerts import rules_from_settings
    from receiver.store import Store

    store = Store("sqlite://")
    try:

        async def no_facts() -> None:
            return None

        names = {
            rule.name
            for rule in rules_from_settings(AlertSettings(), store, evaluator="t", portal=no_facts)
        }
    finally:
        store.close()
    assert names == set(TWINS)
    assert set(TWINS.values()) <= {rule["alert"] for rule in rules()}
