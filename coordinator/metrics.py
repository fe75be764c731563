"""GET /metrics in the Prometheus text format: cluster state read at scrape time, plus API
request counts and latencies recorded by a middleware."""

from __future__ import annotations

import time
from collections import Counter

from shared.status import ACTIVE, JobStatus, NodeStatus
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily

STATUSES = tuple(NodeStatus)
# Label values of the request metrics come from closed sets, so no client can add series: the
# method is one of HTTP's own (anything else is "other"), the route is the matched route's
# template (never the raw path) or "unmatched", the status is a code the app itself chose.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
JOB_STATUSES = tuple(JobStatus)


class ClusterCollector:
    """Reads the registry and the jobs when Prometheus scrapes, so values are never stale."""

    def __init__(self, registry, jobs):
        self.registry, self.jobs = registry, jobs

    def collect(self):
        nodes = self.registry.list_views()
        by_status = Counter(n.status for n in nodes)
        g = GaugeMetricFamily("jupiter_nodes", "Nodes by status.", labels=["status"])
        for s in STATUSES:
            g.add_metric([s], by_status.get(s, 0))
        yield g
        age = GaugeMetricFamily("jupiter_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat.",
                                labels=["node"])
        now = time.time()
        for n in nodes:
            if n.last_heartbeat is not None:
                age.add_metric([n.name], max(0.0, now - n.last_heartbeat.timestamp()))
        yield age
        mem = GaugeMetricFamily("jupiter_node_memory_available_gb", "Available memory reported by the node.",
                                labels=["node"])
        for n in nodes:
            if n.memory_available_gb is not None and n.status != "down":
                mem.add_metric([n.name], n.memory_available_gb)
        yield mem

        rows = self.jobs.list_rows(limit=1000)
        jc = Counter(j.status for j in rows)
        g = GaugeMetricFamily("jupiter_jobs", "Jobs by status (the newest 1000).", labels=["status"])
        for s in JOB_STATUSES:
            g.add_metric([s], jc.get(s, 0))
        yield g
        step = GaugeMetricFamily("jupiter_job_step", "Latest reported step of an active job.", labels=["job", "name"])
        total = GaugeMetricFamily("jupiter_job_total_steps", "Total steps an active job reported.",
                                  labels=["job", "name"])
        loss = GaugeMetricFamily("jupiter_job_loss", "Latest reported loss of an active job.", labels=["job", "name"])
        for j in rows:
            if j.status not in ACTIVE:
                continue
            p = self.jobs.view(j).progress
            if isinstance(p.get("step"), (int, float)):
                step.add_metric([j.id, j.name], p["step"])
            if isinstance(p.get("total_steps"), (int, float)):
                total.add_metric([j.id, j.name], p["total_steps"])
            if isinstance(p.get("loss"), (int, float)):
                loss.add_metric([j.id, j.name], p["loss"])
        yield step
        yield total
        yield loss


class Metrics:
    def __init__(self, registry, jobs):
        self.prom = CollectorRegistry()
        self.prom.register(ClusterCollector(registry, jobs))
        self.requests = PromCounter("jupiter_http_requests", "API requests.", ["method", "route", "status"],
                                    registry=self.prom)
        self.latency = Histogram("jupiter_http_request_duration_seconds", "API request latency.", ["method", "route"],
                                 registry=self.prom,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))

    def middleware(self, app):
        metrics = self

        async def record(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            t0 = time.perf_counter()
            status = {"code": 500}

            async def send_wrapper(msg):
                if msg["type"] == "http.response.start":
                    status["code"] = msg["status"]
                await send(msg)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                route = scope.get("route")
                # The route template, not the raw path: ids would make the label set unbounded.
                path = getattr(route, "path", None) or "unmatched"
                # Long-polls and event streams wait on purpose; their latency is not the API's.
                method = scope["method"] if scope["method"] in METHODS else "other"
                if not path.endswith(("/orders", "/events")):
                    metrics.latency.labels(method, path).observe(time.perf_counter() - t0)
                metrics.requests.labels(method, path, str(status["code"])).inc()

        return record
