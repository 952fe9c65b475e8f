//! Prometheus (OpenMetrics) metrics of one node, and the tiny HTTP endpoint that serves them.
//!
//! ```text
//! server: request served ──▶ Metrics::observe_request(action, role, outcome, duration)
//! server: connection up  ──▶ Metrics::connection_opened() (a guard; dropped when it closes)
//! scrape: GET /metrics   ──▶ store.stats() ──▶ Metrics::set_store_stats ──▶ encode
//! scrape: GET /metrics   ──▶ audit.size(), last_checkpoint() ──▶ Metrics::set_audit_head
//! repair (pending)       ──▶ Metrics::set_repair_backlog(records)
//! ```
//!
//! Every metric is named `bunsan_*`; the full list with meanings is in docs/OPERATIONS.md
//! ("Monitoring"). Labels only ever take values from small fixed sets (actions, roles,
//! outcome labels): never a record key, a certificate name or anything a peer chooses, so a
//! peer cannot blow up the number of series, and no record key ever reaches a metrics system.
//!
//! The audit gauges are absent until the log holds an entry, and the repair gauge until repair
//! publishes a backlog (it does not yet): a `0` would claim "audit head 0" or "nothing to
//! repair" when nothing is known.

mod http;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bunsan_protocol::role::Role;
use bunsan_protocol::ShareIndex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::store::StoreStats;

pub(crate) use http::{serve, Sources};

/// Upper bounds (seconds) of the request latency buckets: from 0.5 ms (a health check on
/// loopback) doubling to ~33 s, just past the default `request_timeout_ms`, so every request
/// that can finish lands in a finite bucket.
const LATENCY_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096, 8.192, 16.384, 32.768,
];

/// The labels of `bunsan_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `health`, `put`, `get`, `delete`, `list`, `status`, or `undecoded` for a frame that
    /// never became a request.
    action: &'static str,
    /// The caller's certificate role.
    role: &'static str,
    /// The outcome label (`stored`, `released`, `forbidden`, `timeout`, ...).
    outcome: &'static str,
}

/// The label of `bunsan_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

type LatencyFamily = Family<ActionLabel, Histogram, fn() -> Histogram>;

/// Every metric of one node. Cheap to update from any task; share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    connections_open: Gauge,
    records: Gauge,
    tombstones: Gauge,
    stored_bytes: Gauge,
    pending: Arc<PendingGauges>,
}

impl Metrics {
    /// The metrics of node `node_id` holding share `index`; `bunsan_node_info` carries both
    /// and the software version, so dashboards can join on them.
    pub fn new(node_id: &str, index: ShareIndex) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "bunsan_node",
            "Which node this is and which software it runs (always 1)",
            Info::new(vec![
                ("node_id", node_id.to_owned()),
                ("index", index.to_string()),
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ]),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "bunsan_requests",
            "Requests answered (or given up on), by action, caller role and outcome",
            requests.clone(),
        );
        let latency: LatencyFamily =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register_with_unit(
            "bunsan_request_duration",
            "Time from a request's first byte to the last byte of its answer, by action",
            Unit::Seconds,
            latency.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "bunsan_connections_open",
            "Client and node connections currently established",
            connections_open.clone(),
        );
        let records = Gauge::default();
        registry.register(
            "bunsan_records",
            "Live records this node holds a share of (refreshed at every scrape)",
            records.clone(),
        );
        let tombstones = Gauge::default();
        registry.register(
            "bunsan_tombstones",
            "Deleted records whose tombstone this node keeps (refreshed at every scrape)",
            tombstones.clone(),
        );
        let stored_bytes = Gauge::default();
        registry.register_with_unit(
            "bunsan_stored",
            "Share payload bytes of the live records (refreshed at every scrape)",
            Unit::Bytes,
            stored_bytes.clone(),
        );
        let pending = Arc::new(PendingGauges::default());
        registry.register_collector(Box::new(Arc::clone(&pending)));
        Self {
            registry,
            requests,
            latency,
            connections_open,
            records,
            tombstones,
            stored_bytes,
            pending,
        }
    }

    /// Counts one request and its latency. `action` and `outcome` are static labels from
    /// the server and handler, never text from the peer.
    pub fn observe_request(
        &self,
        action: &'static str,
        role: Role,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.count_request(action, role, outcome);
        self.latency
            .get_or_create(&ActionLabel { action })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one answer of `action` without a duration: each record of a batched request.
    pub fn count_request(&self, action: &'static str, role: Role, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                action,
                role: role.as_str(),
                outcome,
            })
            .inc();
    }

    /// Marks a connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.connections_open.inc();
        ConnectionGuard {
            gauge: self.connections_open.clone(),
        }
    }

    /// Sets the stored records, tombstones and bytes gauges.
    pub fn set_store_stats(&self, stats: &StoreStats) {
        self.records.set(saturating_i64(stats.records));
        self.tombstones.set(saturating_i64(stats.tombstones));
        self.stored_bytes.set(saturating_i64(stats.bytes));
    }

    /// **Hook for the audit log.** Publishes the sequence number of the newest durable audit
    /// entry and when the last checkpoint was made (`None`: none yet). From the first call on,
    /// a scrape shows `bunsan_audit_sequence` and `bunsan_audit_checkpoint_age_seconds` (the
    /// age computed at scrape time, so a stalled checkpointer shows as a growing age).
    pub fn set_audit_head(&self, sequence: u64, last_checkpoint: Option<SystemTime>) {
        let mut audit = self
            .pending
            .audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *audit = Some(AuditHead {
            sequence,
            last_checkpoint,
        });
    }

    /// **Hook for repair.** Publishes how many records this node knows to be missing or
    /// behind; from the first call on, a scrape shows `bunsan_repair_backlog_records`.
    pub fn set_repair_backlog(&self, records: u64) {
        self.pending
            .repair_backlog
            .store(saturating_i64(records), Ordering::Relaxed);
    }

    /// The metrics in the OpenMetrics text format (which Prometheus scrapes natively).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a collector,
        // and an empty answer makes the scrape fail visibly rather than panic the node.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
            text.clear();
        }
        text
    }
}

/// Keeps `bunsan_connections_open` counted up while a connection lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// What the audit log publishes.
#[derive(Debug, Clone, Copy)]
struct AuditHead {
    sequence: u64,
    last_checkpoint: Option<SystemTime>,
}

/// Gauges that subsystems still to come will set; encoded only once set (see the module
/// documentation for why they are absent rather than 0).
#[derive(Debug)]
struct PendingGauges {
    audit: Mutex<Option<AuditHead>>,
    /// -1 until repair sets it.
    repair_backlog: AtomicI64,
}

impl Default for PendingGauges {
    fn default() -> Self {
        Self {
            audit: Mutex::new(None),
            repair_backlog: AtomicI64::new(-1),
        }
    }
}

impl Collector for PendingGauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let audit = *self
            .audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(head) = audit {
            let sequence = ConstGauge::new(saturating_i64(head.sequence));
            sequence.encode(encoder.encode_descriptor(
                "bunsan_audit_sequence",
                "Sequence number of the newest durable audit log entry",
                None,
                sequence.metric_type(),
            )?)?;
            if let Some(checkpoint) = head.last_checkpoint {
                // A checkpoint "in the future" (clock stepped back) reads as age 0.
                let age = SystemTime::now()
                    .duration_since(checkpoint)
                    .unwrap_or_default()
                    .as_secs_f64();
                let age = ConstGauge::new(age);
                age.encode(encoder.encode_descriptor(
                    "bunsan_audit_checkpoint_age",
                    "Time since the audit log's last signed checkpoint",
                    Some(&Unit::Seconds),
                    age.metric_type(),
                )?)?;
            }
        }
        let backlog = self.repair_backlog.load(Ordering::Relaxed);
        if backlog >= 0 {
            let backlog = ConstGauge::new(backlog);
            backlog.encode(encoder.encode_descriptor(
                "bunsan_repair_backlog",
                "Records this node knows to be missing or behind, waiting for repair",
                Some(&Unit::Other("records".to_owned())),
                backlog.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new("node-1", ShareIndex::new(1).expect("index"))
    }

    #[test]
    fn requests_are_counted_by_action_role_and_outcome() {
        let m = metrics();
        for _ in 0..3 {
            m.observe_request("put", Role::Collector, "stored", Duration::from_millis(3));
        }
        m.observe_request("get", Role::Reader, "forbidden", Duration::from_micros(100));
        let text = m.encode();
        assert!(
            text.contains(
                r#"bunsan_requests_total{action="put",role="collector",outcome="stored"} 3"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"outcome="forbidden"} 1"#), "{text}");
        assert!(
            text.contains(r#"bunsan_request_duration_seconds_bucket{le="0.004",action="put"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"bunsan_node_info{node_id="node-1",index="1",version=""#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn store_gauges_and_connections() {
        let m = metrics();
        m.set_store_stats(&StoreStats {
            records: 12,
            tombstones: 2,
            bytes: 4096,
        });
        let guard = m.connection_opened();
        let text = m.encode();
        for line in [
            "bunsan_records 12",
            "bunsan_tombstones 2",
            "bunsan_stored_bytes 4096",
            "bunsan_connections_open 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        drop(guard);
        assert!(m.encode().lines().any(|l| l == "bunsan_connections_open 0"));
    }

    #[test]
    fn pending_gauges_appear_only_once_set() {
        let m = metrics();
        let before = m.encode();
        assert!(!before.contains("bunsan_audit"), "{before}");
        assert!(!before.contains("bunsan_repair"), "{before}");

        let checkpoint = SystemTime::now() - Duration::from_secs(90);
        m.set_audit_head(41, Some(checkpoint));
        m.set_repair_backlog(7);
        let after = m.encode();
        assert!(
            after.lines().any(|l| l == "bunsan_audit_sequence 41"),
            "{after}"
        );
        let age_line = after
            .lines()
            .find(|l| l.starts_with("bunsan_audit_checkpoint_age_seconds "))
            .expect("age line");
        let age: f64 = age_line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("age value");
        assert!((90.0..120.0).contains(&age), "{age}");
        assert!(
            after
                .lines()
                .any(|l| l == "bunsan_repair_backlog_records 7"),
            "{after}"
        );
    }
}
