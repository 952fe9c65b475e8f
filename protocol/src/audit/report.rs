//! The auditor's report over the entries of every node: who rebuilt which record, when and
//! why; the access history of one record; refused attempts; anomalies.
//!
//! A client sends one get, with one request id, to every node; each node that holds a share
//! releases it and logs the release under that id. So:
//! - a **reconstruction** is a request id with at least k releases (k shares rebuild the record);
//! - a request id with 1..k−1 releases is an **anomaly**: shares were handed out that cannot
//!   rebuild the record on their own (a probe, a client that talks to single nodes, or a node
//!   that did not log its release);
//! - a fanned-out request (get, put, delete) logged on some nodes but **missing** on another
//!   whose log covers that time is an anomaly: that node dropped or never wrote the entry.
//!
//! Pure: entries in, a [`Report`] out; `bunsan audit report` prints it as text or JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::audit::{Actor, AuditEntry, Outcome, ACTION_GET, ACTION_WITNESS};
use crate::types::RequestId;

/// The actions a client fans out to every node with one request id.
const FANNED_OUT: [&str; 3] = [ACTION_GET, "put", "delete"];

/// One node's entries (verified or not: the report states what the logs say).
#[derive(Debug, Clone)]
pub struct NodeEntries {
    /// The node.
    pub node_id: String,
    /// Its entries, in log order.
    pub entries: Vec<AuditEntry>,
}

/// What to report on; everything when empty.
#[derive(Debug, Clone, Default)]
pub struct ReportFilter {
    /// Only this record (and then its whole access history is listed).
    pub record: Option<String>,
    /// Only this actor: a certificate subject, or a prefix (≥ 8 hex digits) of a fingerprint.
    pub actor: Option<String>,
    /// Only events at or after this time, µs since the Unix epoch.
    pub since_micros: Option<u64>,
}

/// Who, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Who {
    /// The certificate subject (or remote address when unauthenticated).
    pub subject: String,
    /// The role, or "unauthenticated".
    pub role: String,
    /// The certificate fingerprint (hex), empty when unauthenticated.
    pub fingerprint: String,
}

impl Who {
    fn of(actor: &Actor) -> Self {
        match actor {
            Actor::Certificate {
                fingerprint,
                subject,
                role,
            } => Who {
                subject: subject.clone(),
                role: role.to_string(),
                fingerprint: hex::encode(fingerprint),
            },
            Actor::Unauthenticated { remote } => Who {
                subject: remote.clone(),
                role: "unauthenticated".to_owned(),
                fingerprint: String::new(),
            },
            Actor::Node => Who {
                subject: "node".to_owned(),
                role: "node".to_owned(),
                fingerprint: String::new(),
            },
        }
    }
}

/// One reconstruction: a request id with at least k share releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reconstruction {
    /// When the first share was released, µs since the epoch.
    pub time_micros: u64,
    /// The client operation.
    pub request_id: String,
    /// The record rebuilt.
    pub key: String,
    /// The version released.
    pub version: String,
    /// Who rebuilt it.
    pub who: Who,
    /// The stated purpose code.
    pub purpose_code: String,
    /// The stated purpose text.
    pub purpose: String,
    /// The nodes that released a share.
    pub nodes: Vec<String>,
}

/// One logged event, as the history and refusal lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When, µs since the epoch.
    pub time_micros: u64,
    /// Which node logged it.
    pub node: String,
    /// Its sequence number there.
    pub seq: u64,
    /// Who asked.
    pub who: Who,
    /// What was asked.
    pub action: String,
    /// The record, if any.
    pub key: String,
    /// The outcome label.
    pub outcome: String,
    /// The refusal or failure reason, or the purpose of a get.
    pub detail: String,
    /// The client operation, if any.
    pub request_id: String,
}

/// Something an auditor should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Anomaly {
    /// Fewer than k shares were released under one request id.
    PartialRelease {
        /// The client operation.
        request_id: String,
        /// The record.
        key: String,
        /// Who asked.
        who: Who,
        /// Releases logged.
        releases: usize,
        /// k.
        threshold: u8,
        /// The nodes that released.
        nodes: Vec<String>,
    },
    /// A fanned-out request logged on some nodes but not on others that were logging then (a
    /// get that rebuilt its record is not: it asks only k nodes).
    Missing {
        /// The client operation.
        request_id: String,
        /// The action.
        action: String,
        /// The record.
        key: String,
        /// The nodes that logged it.
        present_on: Vec<String>,
        /// The nodes whose logs cover that time but do not have it: a client that stopped
        /// before its request reached them, or, if it recurs for one node, a node that answers
        /// without logging.
        missing_on: Vec<String>,
    },
    /// One request id used by more than one certificate (a replayed or forged id).
    SharedRequestId {
        /// The client operation.
        request_id: String,
        /// The certificate subjects that used it.
        subjects: Vec<String>,
    },
    /// A node refused to cosign another node's log (an inconsistent or forked log).
    WitnessAlarm {
        /// The node that raised it.
        node: String,
        /// When.
        time_micros: u64,
        /// What it found.
        reason: String,
    },
}

/// The report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// k, from the cluster manifest.
    pub threshold: u8,
    /// Every reconstruction, oldest first.
    pub reconstructions: Vec<Reconstruction>,
    /// With a record filter: every event about that record, oldest first.
    pub history: Vec<Event>,
    /// Refused requests and connections, oldest first.
    pub refused: Vec<Event>,
    /// What looks wrong.
    pub anomalies: Vec<Anomaly>,
}

struct Group<'a> {
    events: Vec<(&'a str, &'a AuditEntry)>,
}

/// Builds the report for a cluster with threshold `threshold` from every node's entries.
pub fn build(threshold: u8, logs: &[NodeEntries], filter: &ReportFilter) -> Report {
    let k = usize::from(threshold);
    let mut groups: BTreeMap<RequestId, Group<'_>> = BTreeMap::new();
    let mut report = Report {
        threshold,
        reconstructions: Vec::new(),
        history: Vec::new(),
        refused: Vec::new(),
        anomalies: Vec::new(),
    };
    for log in logs {
        for entry in &log.entries {
            let node = log.node_id.as_str();
            if let Some(id) = entry.request_id {
                if FANNED_OUT.contains(&entry.action.as_str()) {
                    groups
                        .entry(id)
                        .or_insert_with(|| Group { events: Vec::new() })
                        .events
                        .push((node, entry));
                }
            }
            if !filter.matches(entry) {
                continue;
            }
            if filter.record.is_some() {
                report.history.push(event(node, entry));
            }
            if matches!(entry.outcome, Outcome::Refused { .. }) {
                report.refused.push(event(node, entry));
            }
            if entry.action == ACTION_WITNESS {
                if let Outcome::Failed { reason, .. } = &entry.outcome {
                    report.anomalies.push(Anomaly::WitnessAlarm {
                        node: node.to_owned(),
                        time_micros: entry.time_micros,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }
    let spans: BTreeMap<&str, (u64, u64)> = logs
        .iter()
        .filter_map(|log| {
            let first = log.entries.first()?.time_micros;
            let last = log.entries.last()?.time_micros;
            Some((log.node_id.as_str(), (first, last)))
        })
        .collect();
    for (id, group) in &groups {
        let (_, first) = group.events[0];
        if !group.events.iter().any(|(_, e)| filter.matches(e)) {
            continue;
        }
        let request_id = id.to_string();
        let key = first
            .key
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_default();
        let subjects: BTreeSet<&str> = group.events.iter().map(|(_, e)| e.actor.name()).collect();
        if subjects.len() > 1 {
            report.anomalies.push(Anomaly::SharedRequestId {
                request_id: request_id.clone(),
                subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
        let releases: Vec<&(&str, &AuditEntry)> = group
            .events
            .iter()
            .filter(|(_, e)| e.action == ACTION_GET && e.outcome == Outcome::Released)
            .collect();
        let released_on: Vec<String> = releases.iter().map(|(n, _)| (*n).to_owned()).collect();
        let reconstructed = releases.len() >= k;
        if let Some((_, release)) = releases.first().copied() {
            if reconstructed {
                let time_micros = releases.iter().map(|(_, e)| e.time_micros).min();
                report.reconstructions.push(Reconstruction {
                    time_micros: time_micros.unwrap_or(release.time_micros),
                    request_id: request_id.clone(),
                    key: key.clone(),
                    version: release.version.map(|v| v.to_string()).unwrap_or_default(),
                    who: Who::of(&release.actor),
                    purpose_code: release
                        .purpose
                        .as_ref()
                        .map(|p| p.code().to_owned())
                        .unwrap_or_default(),
                    purpose: release
                        .purpose
                        .as_ref()
                        .map(|p| p.text().to_owned())
                        .unwrap_or_default(),
                    nodes: released_on.clone(),
                });
            } else {
                report.anomalies.push(Anomaly::PartialRelease {
                    request_id: request_id.clone(),
                    key: key.clone(),
                    who: Who::of(&release.actor),
                    releases: releases.len(),
                    threshold,
                    nodes: released_on.clone(),
                });
            }
        }
        let present: BTreeSet<&str> = group.events.iter().map(|(n, _)| *n).collect();
        let time = first.time_micros;
        let missing: Vec<String> = spans
            .iter()
            .filter(|(node, (from, to))| !present.contains(*node) && *from <= time && time <= *to)
            .map(|(node, _)| (*node).to_owned())
            .collect();
        // A get asks k nodes for shares (and only then others): a reconstruction absent from
        // the other logs is the normal case. Puts, deletes and unfinished gets still reach, or
        // should reach, every node.
        if !missing.is_empty() && !reconstructed {
            report.anomalies.push(Anomaly::Missing {
                request_id,
                action: first.action.clone(),
                key,
                present_on: present.iter().map(|n| (*n).to_owned()).collect(),
                missing_on: missing,
            });
        }
    }
    report.reconstructions.sort_by_key(|r| r.time_micros);
    report
        .history
        .sort_by_key(|e| (e.time_micros, e.node.clone()));
    report
        .refused
        .sort_by_key(|e| (e.time_micros, e.node.clone()));
    report
}

impl ReportFilter {
    fn matches(&self, entry: &AuditEntry) -> bool {
        if let Some(record) = &self.record {
            if entry.key.as_ref().map(|k| k.as_str()) != Some(record.as_str()) {
                return false;
            }
        }
        if let Some(actor) = &self.actor {
            let by_subject = entry.actor.name() == actor;
            let by_fingerprint = actor.len() >= 8
                && matches!(&entry.actor, Actor::Certificate { fingerprint, .. }
                    if hex::encode(fingerprint).starts_with(&actor.to_ascii_lowercase()));
            if !by_subject && !by_fingerprint {
                return false;
            }
        }
        self.since_micros
            .is_none_or(|since| entry.time_micros >= since)
    }
}

fn event(node: &str, entry: &AuditEntry) -> Event {
    let detail = match &entry.outcome {
        Outcome::Refused { code, reason } | Outcome::Failed { code, reason } => {
            format!("{code:?}: {reason}")
        }
        _ => entry
            .purpose
            .as_ref()
            .map(|p| format!("purpose {}: {}", p.code(), p.text()))
            .unwrap_or_default(),
    };
    Event {
        time_micros: entry.time_micros,
        node: node.to_owned(),
        seq: entry.seq,
        who: Who::of(&entry.actor),
        action: entry.action.clone(),
        key: entry
            .key
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_default(),
        outcome: entry.outcome.label().to_owned(),
        detail,
        request_id: entry
            .request_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

impl Report {
    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let who = |w: &Who| format!("{} ({}, {:.12})", w.subject, w.role, w.fingerprint);
        let _ = writeln!(
            out,
            "Reconstructions (>= {} shares released under one request id): {}",
            self.threshold,
            self.reconstructions.len()
        );
        for r in &self.reconstructions {
            let _ = writeln!(
                out,
                "  {}  {}  rebuilt {} v{}  purpose {}: {:?}  request {}  from {}",
                format_time(r.time_micros),
                who(&r.who),
                r.key,
                r.version,
                r.purpose_code,
                r.purpose,
                r.request_id,
                r.nodes.join(",")
            );
        }
        if !self.history.is_empty() {
            let _ = writeln!(out, "Access history: {} events", self.history.len());
            for e in &self.history {
                let _ = writeln!(out, "  {}", event_line(e, &who));
            }
        }
        let _ = writeln!(out, "Refused attempts: {}", self.refused.len());
        for e in &self.refused {
            let _ = writeln!(out, "  {}", event_line(e, &who));
        }
        let _ = writeln!(out, "Anomalies: {}", self.anomalies.len());
        for anomaly in &self.anomalies {
            let line = match anomaly {
                Anomaly::PartialRelease {
                    request_id,
                    key,
                    who: w,
                    releases,
                    threshold,
                    nodes,
                } => format!(
                    "partial release: request {request_id} by {} released {releases} share(s) of \
                     {key} (fewer than k = {threshold}) on {}",
                    who(w),
                    nodes.join(",")
                ),
                Anomaly::Missing {
                    request_id,
                    action,
                    key,
                    present_on,
                    missing_on,
                } => format!(
                    "missing entries: {action} {key} request {request_id} is logged on {} but not \
                     on {}",
                    present_on.join(","),
                    missing_on.join(","),
                ),
                Anomaly::SharedRequestId {
                    request_id,
                    subjects,
                } => format!(
                    "request id {request_id} was used by several certificates: {}",
                    subjects.join(",")
                ),
                Anomaly::WitnessAlarm {
                    node,
                    time_micros,
                    reason,
                } => format!(
                    "witness alarm on {node} at {}: {reason}",
                    format_time(*time_micros)
                ),
            };
            let _ = writeln!(out, "  {line}");
        }
        out
    }
}

fn event_line(e: &Event, who: &dyn Fn(&Who) -> String) -> String {
    format!(
        "{}  {} #{}  {}  {} {}  {}  {}",
        format_time(e.time_micros),
        e.node,
        e.seq,
        who(&e.who),
        e.action,
        e.key,
        e.outcome,
        e.detail
    )
}

/// Formats µs since the epoch as RFC 3339 UTC with microseconds.
pub fn format_time(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        micros % 1_000_000
    )
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ` (UTC) or plain Unix seconds into µs since the
/// epoch.
pub fn parse_time(text: &str) -> Option<u64> {
    if let Ok(secs) = text.parse::<u64>() {
        return secs.checked_mul(1_000_000);
    }
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time.strip_suffix('Z')?)),
        None => (text, None),
    };
    let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(d)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(time) = time {
        let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
        let (Some(Some(h)), Some(Some(min)), Some(Some(s)), None) =
            (hms.next(), hms.next(), hms.next(), hms.next())
        else {
            return None;
        };
        if h > 23 || min > 59 || s > 60 {
            return None;
        }
        secs += h * 3600 + min * 60 + s;
    }
    u64::try_from(secs).ok()?.checked_mul(1_000_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
