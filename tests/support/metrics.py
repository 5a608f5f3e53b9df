"""A gateway's Prometheus ``/metrics``, scraped and parsed with prometheus_client's parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample's value by name and labels."""

    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly ``labels`` (0 when it is not exposed yet: a
        labelled counter appears with its first increment)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        """Whether the sample ``name`` with exactly ``labels`` is exposed."""
        return (name, frozenset(labels.items())) in self.samples

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def labels(self, name: str, label: str) -> set[str]:
        """The values ``label`` takes among the samples ``name``."""
        return {dict(ls)[label] for (n, ls) in self.samples if n == name and label in dict(ls)}

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def scrape(url: str, timeout: float = 10.0) -> Scrape:
    """GET ``url`` and parse the exposition text."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode("utf-8")
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return Scrape(samples)


def metrics_url(log_events: list[dict]) -> str:
    """The ``/metrics`` address a gateway announced in its ``gateway_started`` log record."""
    (started,) = log_events
    url = started.get("metrics")
    assert url, f"the gateway announced no metrics endpoint: {started}"
    return url
