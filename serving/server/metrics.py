"""Prometheus metrics with TensorFlow Serving's names (`/` mapped to `:`), served on the REST port.

  :tensorflow:serving:request_count{model_name,status}                      requests by outcome
  :tensorflow:serving:request_latency{model_name,API,entrypoint}            microseconds, histogram
  :tensorflow:serving:runtime_latency{model_name,API,runtime}               microseconds in the Session
  :tensorflow:serving:batching_session:queuing_latency{thread_pool_name}    microseconds in the batch queue
  :tfzoo:serving:signature_request_count{model_name,version,signature_name,status}   per version and signature
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess

from serving.server.processes import METRICS_ENV

# TF Serving's latency buckets: exponential from 10 us, factor 1.8 (33 buckets).
LATENCY_BUCKETS = tuple(float(f"{10 * 1.8 ** i:.6g}") for i in range(33))


class Metrics:
    """The server's metrics registry."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.request_count = Counter(":tensorflow:serving:request_count", "The total number of requests.",
                                     ["model_name", "status"], registry=self.registry)
        self.request_latency = Histogram(":tensorflow:serving:request_latency",
                                         "Distribution of wall time (in microseconds) for Tensorflow Serving "
                                         "request.", ["model_name", "API", "entrypoint"],
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
        self.runtime_latency = Histogram(":tensorflow:serving:runtime_latency",
                                         "Distribution of wall time (in microseconds) for Tensorflow runtime.",
                                         ["model_name", "API", "runtime"], buckets=LATENCY_BUCKETS,
                                         registry=self.registry)
        self.queuing_latency = Histogram(":tensorflow:serving:batching_session:queuing_latency",
                                         "Distribution of wall time spent (in microseconds) in queuing",
                                         ["thread_pool_name"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.signature_count = Counter(":tfzoo:serving:signature_request_count",
                                       "Requests per model version and signature.",
                                       ["model_name", "version", "signature_name", "status"],
                                       registry=self.registry)

    def request(self, model: str, api: str, entrypoint: str, status: str, seconds: float,
                version: int | None = None, signature: str | None = None) -> None:
        """Count one request and its latency."""
        self.request_count.labels(model, status).inc()
        self.request_latency.labels(model, api, entrypoint).observe(seconds * 1e6)
        if version is not None:
            self.signature_count.labels(model, str(version), signature or "", status).inc()

    def runtime(self, model: str, seconds: float) -> None:
        """Time spent running the Session for one request (or batch)."""
        self.runtime_latency.labels(model, "Predict", "TF1").observe(seconds * 1e6)

    def queued(self, seconds: float) -> None:
        """Time one task waited in a batching queue."""
        self.queuing_latency.labels("batch_threads").observe(seconds * 1e6)

    def exposition(self) -> bytes:
        """The Prometheus text format, with TF Serving's sample names.

        prometheus_client names counter samples `<name>_total` and adds `_created` samples; TF Serving
        exposes counters under their own name and has no `_created`, so samples are written here.
        """
        registry = self.registry
        if os.environ.get(METRICS_ENV):  # --server_processes: the sum over every process
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        lines = []
        for family in registry.collect():
            lines.append(f"# HELP {family.name} {family.documentation}")
            lines.append(f"# TYPE {family.name} {family.type}")
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                name = family.name if family.type == "counter" else sample.name
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
                lines.append(f"{name}{{{labels}}} {_number(sample.value)}" if labels
                             else f"{name} {_number(sample.value)}")
        return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
