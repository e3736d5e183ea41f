"""deploy/grafana/ssehub.json against the real thing: every metric a dashboard
expression uses is in the /metrics output of a real edge and dispatcher; and
the edge's histograms after a known workload."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ssehub.dispatcher.main import running_dispatcher
from ssehub.edge.auth import mint_token
from ssehub.publisher import Publisher

from tests.sse import open_stream
from tests.support import make_settings, rabbitmq_vhost, running_edge, uid

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "ssehub.json"
METRIC = re.compile(r"\bssehub_[a-z_]+")
SUFFIXES = {"_bucket": "histogram", "_sum": "histogram", "_count": "histogram", "_total": "counter"}


@dataclass
class Scraped:
    """One /metrics answer: family name → type, sample name → samples."""

    types: dict[str, str]
    samples: dict[str, list[tuple[dict[str, str], float]]]

    def value(self, name: str, **labels: str) -> float:
        return sum(v for got, v in self.samples.get(name, []) if labels.items() <= got.items())


def parse(text: str) -> Scraped:
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return Scraped(types, samples)


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    return exprs


def family_of(name: str, types: dict[str, str]) -> tuple[str, str | None]:
    """``x_bucket`` → (``x``, "histogram"), ``x_total`` → (``x``, "counter"), else (x, None).
    Only strips a suffix when the family it names exists (``..._count`` may be a gauge)."""
    for suffix, kind in SUFFIXES.items():
        base = name.removesuffix(suffix)
        if base != name and base in types:
            return base, kind
    return name, None


@dataclass
class Observed:
    edge: Scraped
    dispatcher: Scraped


@pytest.fixture(scope="module")
def own_amqp(broker_url: str) -> Iterator[str]:
    with rabbitmq_vhost(broker_url) as url:  # no other dispatcher on this queue
        yield url


@pytest.fixture(scope="module")
async def observed(
    own_amqp: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Observed]:
    """An edge and a dispatcher with its port; one stream gets one live event,
    reconnects and replays one; then both are scraped."""
    db = tmp_path_factory.mktemp("dash") / "d.db"
    settings = make_settings(own_amqp, f"sqlite:///{db}")
    user = uid()
    token = mint_token(settings, user)
    async with (
        running_dispatcher(settings, port=0) as dispatcher,
        running_edge(settings) as (edge, _),
    ):
        publisher = Publisher(own_amqp)
        try:
            async with open_stream(edge, token) as (_, client):
                assert (await client.next()).event == "connected"
                await publisher.send_event_to_user(user, "live", 1)
                assert (await client.next()).seq == 1
            await publisher.send_event_to_user(user, "missed", 2)
            metrics_url = f"http://127.0.0.1:{dispatcher.http_port}/metrics"
            async with httpx.AsyncClient(timeout=10) as http:
                async with asyncio.timeout(20):  # until the dispatcher committed it
                    while (
                        parse((await http.get(metrics_url)).text).value(
                            "ssehub_dispatcher_events_accepted_total"
                        )
                        < 2
                    ):
                        await asyncio.sleep(0.05)  # wait-ok: the commit is in the background
            async with open_stream(edge, token, last_event_id="1") as (_, client):
                assert (await client.next()).json["recovered"] is True
                assert (await client.next()).seq == 2  # replayed
            async with httpx.AsyncClient(timeout=10) as http:
                async with asyncio.timeout(20):
                    while True:  # both streams' ends are counted once the edge saw them go
                        edge_metrics = parse((await http.get(edge + "/metrics")).text)
                        if edge_metrics.value("ssehub_stream_closes_total") >= 2:
                            break
                        await asyncio.sleep(0.05)  # wait-ok: disconnects are noticed async
                text = (await http.get(metrics_url)).text
            yield Observed(edge_metrics, parse(text))
        finally:
            await publisher.close()


def test_every_dashboard_metric_is_exported(observed: Observed) -> None:
    exprs = dashboard_expressions()
    assert len(exprs) >= 20
    types = {**observed.edge.types, **observed.dispatcher.types}
    samples = {**observed.edge.samples, **observed.dispatcher.samples}
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    missing = sorted(name for name in used if name not in samples)
    assert not missing, f"the dashboard uses metrics nobody exports: {missing}"
    for name in used:
        base, kind = family_of(name, types)
        if kind is not None:
            assert types[base] == kind, f"{name}: {base} is a {types[base]}, not a {kind}"
        else:  # a bare name: a gauge (rate() of a counter must name its _total)
            assert types.get(name) == "gauge", f"{name}: not a gauge"
    # and the dashboard asks for the metrics this issue is about
    for wanted in (
        "ssehub_dispatcher_active",
        "ssehub_dispatcher_queue_ready",
        "ssehub_dispatcher_dead_letters_total",
        "ssehub_publish_to_write_seconds_bucket",
        "ssehub_stream_closes_total",
    ):
        assert wanted in used


def test_histogram_quantiles_group_by_le(observed: Observed) -> None:
    """A quantile over a histogram that loses ``le`` in its sum is always NaN."""
    for expr in dashboard_expressions():
        if "histogram_quantile" in expr:
            assert re.search(r"sum by \(le[,)]", expr), expr


def test_edge_histograms_after_one_live_event_and_one_replay(observed: Observed) -> None:
    edge = observed.edge
    assert edge.value("ssehub_connect_seconds_count") == 2
    assert edge.value("ssehub_publish_to_write_seconds_count") >= 1  # the live event, sampled
    assert edge.value("ssehub_replay_events_count") == 1
    assert edge.value("ssehub_replay_events_sum") == 1
    assert edge.value("ssehub_replay_seconds_count") == 1
    assert edge.value("ssehub_stream_closes_total", reason="disconnect") == 2
    assert edge.value("ssehub_stream_closes_total", reason="slow") == 0
    assert edge.value("ssehub_events_written_total") == 2


def test_dispatcher_metrics_after_the_workload(observed: Observed) -> None:
    d = observed.dispatcher
    assert d.value("ssehub_dispatcher_events_accepted_total") == 2
    assert d.value("ssehub_dispatcher_dead_letters_total") == 0
    assert d.value("ssehub_dispatcher_active") == 1
    assert d.value("ssehub_dispatcher_edges") == 1  # the edge, by its joins and heartbeats
    assert d.value("ssehub_dispatcher_routed_users") <= 1  # the user's leave may be in flight
    # the two events, and the edge's route rounds (joins and leaves: edge/joins.py)
    assert d.value("ssehub_dispatcher_batch_messages_sum") >= 2
    assert d.value("ssehub_dispatcher_commit_seconds_count") >= 2
    assert d.value("ssehub_dispatcher_intake_to_publish_seconds_count") >= 2
