"""Prometheus metrics of the server, one registry per app so tests stay independent."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class ServerMetrics:
    """Counters every stage updates; exposed at ``/metrics``."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.batches = Counter("a2z_ingest_batches", "Batches received from agents", registry=r)
        self.events_stored = Counter("a2z_events_stored", "Event rows written", registry=r)
        self.events_duplicate = Counter(
            "a2z_events_duplicate", "Re-sent events collapsed onto stored rows", registry=r
        )
        self.wire_errors = Counter(
            "a2z_wire_errors", "Agent frames refused as invalid", ["reason"], registry=r
        )
        self.heartbeats = Counter("a2z_agent_heartbeats", "Agent heartbeats received", registry=r)
        self.agent_signals = Counter(
            "a2z_agent_signals_relayed",
            "Agent signals relayed between server processes (sent, received, bad, failed)",
            ["outcome"],
            registry=r,
        )
        self.control_sent = Counter(
            "a2z_agent_control_sent",
            "Configuration pushes, rule sets and commands sent",
            ["kind"],
            registry=r,
        )
        self.control_results = Counter(
            "a2z_agent_control_results",
            "Configuration and command results from agents",
            ["kind", "outcome"],
            registry=r,
        )
        self.clones = Counter(
            "a2z_agent_clones", "Second live connection with one agent identity", registry=r
        )
        self.auth_failures = Counter(
            "a2z_auth_failures", "Refused credentials", ["channel"], registry=r
        )
        self.hot_reads = Counter(
            "a2z_api_hot_reads",
            "List reads answered by the hot read path, before FastAPI (hot_reads.py)",
            ["path"],
            registry=r,
        )
        # The hot read path's page cache (page_cache.py, docs/adr/0022-hot-read-page-cache.md).
        self.page_cache_hits = Counter(
            "a2z_page_cache_hits", "Hot reads answered from the page cache", ["path"], registry=r
        )
        self.page_cache_misses = Counter(
            "a2z_page_cache_misses",
            "Hot reads that rendered their page (none kept, a write since, or older than the TTL)",
            ["path"],
            registry=r,
        )
        self.page_cache_coalesced = Counter(
            "a2z_page_cache_coalesced",
            "Hot reads that missed and waited for a render of the same page already running",
            ["path"],
            registry=r,
        )
        self.page_cache_invalidations = Counter(
            "a2z_page_cache_invalidations",
            "Committed writes by this process that ended a tenant's cached pages (all processes)",
            registry=r,
        )
        self.ingest_batch_records = Histogram(
            "a2z_ingest_batch_records",
            "Records per batch written to the store",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        self.ingest_write_seconds = Histogram(
            "a2z_ingest_write_seconds",
            "Time to write one transaction's batches (group commit)",
            registry=r,
        )
        self.ingest_group_batches = Histogram(
            "a2z_ingest_group_batches",
            "Batches stored per ingest transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32),
            registry=r,
        )
        self.ingest_group_retried = Counter(
            "a2z_ingest_group_retried",
            "Groups whose transaction failed and were written again one batch at a time",
            registry=r,
        )
        # The bus stage (JetStream): what was made durable, delivered, acked, retried, parked.
        self.bus_published = Counter(
            "a2z_bus_published", "Messages the bus confirmed durable (PubAck)", registry=r
        )
        self.bus_publish_duplicates = Counter(
            "a2z_bus_publish_duplicates",
            "Publishes the bus recognised by Nats-Msg-Id as already stored",
            registry=r,
        )
        self.bus_publish_errors = Counter(
            "a2z_bus_publish_errors",
            "Publish attempts that failed (retried or reported)",
            registry=r,
        )
        self.bus_consumed = Counter(
            "a2z_bus_consumed", "Deliveries handed to a consumer", ["group"], registry=r
        )
        self.bus_acked = Counter(
            "a2z_bus_acked", "Messages acked after the handler committed", ["group"], registry=r
        )
        self.bus_redelivered = Counter(
            "a2z_bus_redelivered", "Deliveries of a message seen before", ["group"], registry=r
        )
        self.bus_retries = Counter(
            "a2z_bus_retries",
            "Transient handler failures, redelivered later",
            ["group"],
            registry=r,
        )
        self.bus_dead_lettered = Counter(
            "a2z_bus_dead_lettered",
            "Messages moved to the dead-letter stream (reason: poison, max_deliver or unanswered)",
            ["group", "reason"],
            registry=r,
        )
        self.bus_consumer_lag = Gauge(
            "a2z_bus_consumer_lag",
            "Messages in the stream not yet delivered to the group (at the last delivery)",
            ["group"],
            registry=r,
        )
        # Tenant rules: refused texts, dry-run work, merges of overrides with new shipped rules.
        self.rules_rejected = Counter(
            "a2z_rules_rejected",
            "Rule texts refused at the API (kind: syntax or unsupported)",
            ["kind"],
            registry=r,
        )
        self.rules_dry_run_records = Counter(
            "a2z_rules_dry_run_records", "Stored records scanned by rule dry runs", registry=r
        )
        self.rules_upstream_merges = Counter(
            "a2z_rules_upstream_merges",
            "Overrides merged with a new shipped version (outcome: clean, conflict, kept)",
            ["outcome"],
            registry=r,
        )
        self.rules_upstream_merge_errors = Counter(
            "a2z_rules_upstream_merge_errors",
            "Tenants whose override merge failed at startup (retried at the next start)",
            registry=r,
        )
        # Threat intel: import input refused (reason: rejected value, unsupported STIX
        # pattern, unreadable file, too long), and the detect role's set refreshes.
        self.intel_import_rejected = Counter(
            "a2z_intel_import_rejected",
            "Values or files refused by intel imports, by reason",
            ["reason"],
            registry=r,
        )
        self.intel_refresh_seconds = Histogram(
            "a2z_intel_refresh_seconds",
            "Time the detect role spent bringing a tenant's (or the global) set up to date",
            ["kind"],
            registry=r,
        )
        self.bus_handle_seconds = Histogram(
            "a2z_bus_handle_seconds", "Handler time per message", ["group"], registry=r
        )
        # Every stage: records in, out, dropped and throttled, so a gap between stages shows
        # where records are (stage: gateway = agent channel, http = REST ingest, ingest = the
        # bus consumer writing the store).
        self.events_in = Counter("a2z_events_in", "Records a stage received", ["stage"], registry=r)
        self.events_out = Counter(
            "a2z_events_out",
            "Records a stage passed on (gateway/http: durable on the bus; ingest: committed)",
            ["stage"],
            registry=r,
        )
        self.events_dropped = Counter(
            "a2z_events_dropped",
            "Records a stage gave up on for good (reason: wire, poison)",
            ["stage", "reason"],
            registry=r,
        )
        self.events_throttled = Counter(
            "a2z_events_throttled",
            "Records refused (to be re-sent later) for a tenant limit (limit: rate, storage)",
            ["stage", "limit"],
            registry=r,
        )
        # Leased rate tokens (ADR 24): a process takes a block from the tenant's shared bucket
        # in one transaction and admits from it in memory.
        self.quota_leases = Counter(
            "a2z_quota_leases",
            "Transactions on a tenant's shared rate bucket (outcome: taken, short: none left)",
            ["outcome"],
            registry=r,
        )
        self.quota_lease_tokens = Counter(
            "a2z_quota_lease_tokens",
            "Rate tokens leased from shared buckets (event: leased; returned: put back unused "
            "with the next lease; dropped: discarded, the tenant's limits changed)",
            ["event"],
            registry=r,
        )
        self.quota_leases_expired = Counter(
            "a2z_quota_leases_expired",
            "Leases that outlived their time with tokens left (returned with the next lease)",
            registry=r,
        )
        self.frames_refused_undecoded = Counter(
            "a2z_frames_refused_undecoded",
            "Agent frames refused for a tenant limit from their header, records never decoded",
            ["limit"],
            registry=r,
        )
        self.publish_seconds = Histogram(
            "a2z_publish_seconds",
            "Time from a batch received to durable on the bus (the agent's ack waits for it)",
            ["stage"],
            registry=r,
        )
        self.ingest_lag_seconds = Histogram(
            "a2z_ingest_lag_seconds",
            "Agent send time to committed in the store (agent clock; ingest-to-queryable)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        # Tenant limits (quotas/).
        self.quota_refresh_errors = Counter(
            "a2z_quota_refresh_errors", "Failed reloads of tenant limits and usage", registry=r
        )
        # Event-store upkeep (events/maintenance.py).
        self.partitions_created = Counter(
            "a2z_event_partitions_created", "Day partitions created ahead", registry=r
        )
        self.partition_rows_moved = Counter(
            "a2z_event_partition_rows_moved",
            "Rows moved from the default partition into a new day partition",
            registry=r,
        )
        self.partitions_dropped = Counter(
            "a2z_event_partitions_dropped", "Day partitions dropped by retention", registry=r
        )
        self.retention_deleted = Counter(
            "a2z_retention_deleted", "Event rows deleted by per-tenant retention", registry=r
        )
        self.maintenance_errors = Counter(
            "a2z_maintenance_errors", "Failed event-store upkeep steps", ["step"], registry=r
        )
        self.maintenance_seconds = Histogram(
            "a2z_maintenance_seconds", "Time of one upkeep step", ["step"], registry=r
        )
        # The detect stage: backend detections over every batch.
        self.detect_records = Counter(
            "a2z_detect_records", "Records the backend detections examined", registry=r
        )
        self.detect_alerts = Counter(
            "a2z_detect_alerts", "Alerts the backend detections raised", ["detector"], registry=r
        )
        self.detect_errors = Counter(
            "a2z_detect_errors", "Batches a detector failed on (skipped)", ["detector"], registry=r
        )
        self.detect_rules_skipped = Counter(
            "a2z_detect_rules_skipped",
            "Tenant rules the detect role could not compile (skipped; the others run)",
            registry=r,
        )
        self.detect_seconds = Histogram(
            "a2z_detect_seconds", "Detection time per batch (all detectors)", registry=r
        )
        self.detect_correlation_dropped = Counter(
            "a2z_detect_correlation_dropped",
            "Correlation input dropped: late or future matches, groups evicted by the state cap",
            ["reason"],
            registry=r,
        )
