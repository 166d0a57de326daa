"""Counts as Prometheus text, written by prometheus_client from our numbers.

The library's own metric objects are not used for counting (each update would take a
lock, and a qremoted with workers would need its multiprocess mode): a collector hands
it the current :class:`~qremote.metrics.counts.Counts` only when Prometheus asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from qremote.metrics.counts import Counts, Series

PREFIX = "qremote_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def full_name(series: Series) -> str:
    """The name Prometheus stores: the prefix, and ``_total`` after a counter's."""
    return PREFIX + series.name + ("_total" if series.kind == "counter" else "")


def families(counts: Counts, series: tuple[Series, ...]) -> Iterator[Metric]:
    for s in series:
        name = PREFIX + s.name
        labels = list(s.labels)
        family: Metric
        if s.kind == "histogram":
            family = HistogramMetricFamily(name, s.help, labels=labels)
            for values, row in sorted(counts.histograms.get(s.name, {}).items()):
                cumulative, buckets = 0.0, []
                for bound, n in zip([*map(str, s.buckets), "+Inf"], row[:-1], strict=True):
                    cumulative += n
                    buckets.append((bound, cumulative))
                family.add_metric(list(values), buckets, row[-1])
        else:
            make = CounterMetricFamily if s.kind == "counter" else GaugeMetricFamily
            family = make(name, s.help, labels=labels)
            for values, value in sorted(counts.values.get(s.name, {}).items()):
                family.add_metric(list(values), value)
        yield family


class _Collector(Collector):
    def __init__(self, source: Callable[[], Counts], series: tuple[Series, ...]) -> None:
        self.source = source
        self.series = series

    def collect(self) -> Iterator[Metric]:
        return families(self.source(), self.series)


def render(counts: Counts, series: tuple[Series, ...]) -> bytes:
    """The text a scrape gets."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(lambda: counts, series))
    return generate_latest(registry)
