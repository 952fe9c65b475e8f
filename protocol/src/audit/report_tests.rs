//! Tests of [`super`]: reconstructions are attributed, partial releases and missing entries are
//! flagged, filters select, times format and parse.

use super::*;
use crate::audit::Actor;
use crate::message::ErrorCode;
use crate::role::Role;
use crate::types::{Purpose, RecordKey};

fn actor(name: &str, role: Role) -> Actor {
    Actor::Certificate {
        fingerprint: *blake3::hash(name.as_bytes()).as_bytes(),
        subject: name.to_owned(),
        role,
    }
}

fn get(
    node: &str,
    seq: u64,
    time: u64,
    who: &str,
    key: &str,
    id: u8,
    outcome: Outcome,
) -> AuditEntry {
    AuditEntry {
        seq,
        time_micros: time,
        node_id: node.to_owned(),
        actor: actor(who, Role::Reader),
        action: ACTION_GET.to_owned(),
        key: Some(RecordKey::new(key).expect("key")),
        version: None,
        purpose: Some(Purpose::new("treatment", format!("{who} reads")).expect("purpose")),
        request_id: Some(RequestId([id; 16])),
        outcome,
    }
}

/// Three nodes, k = 2: request 1 by alice on all three, request 2 by bob on two, request 3 by
/// carol released only on node-1 (a partial release) and missing on node-3, plus a refusal.
fn logs() -> Vec<NodeEntries> {
    let mut logs: Vec<NodeEntries> = (1..=3)
        .map(|i| NodeEntries {
            node_id: format!("node-{i}"),
            entries: Vec::new(),
        })
        .collect();
    let mut push = |node: usize, entry: AuditEntry| {
        let log = &mut logs[node];
        let mut entry = entry;
        entry.seq = log.entries.len() as u64;
        log.entries.push(entry);
    };
    for node in 0..3 {
        let name = format!("node-{}", node + 1);
        push(
            node,
            get(&name, 0, 100, "alice", "rec/a", 1, Outcome::Released),
        );
    }
    push(
        0,
        get("node-1", 0, 200, "bob", "rec/b", 2, Outcome::Released),
    );
    push(
        1,
        get("node-2", 0, 201, "bob", "rec/b", 2, Outcome::Released),
    );
    push(
        2,
        get("node-3", 0, 202, "bob", "rec/b", 2, Outcome::NotFound),
    );
    push(
        0,
        get("node-1", 0, 300, "carol", "rec/a", 3, Outcome::Released),
    );
    push(
        1,
        get("node-2", 0, 301, "carol", "rec/a", 3, Outcome::NotFound),
    );
    let mut refused = get("node-2", 0, 400, "dave", "rec/a", 4, Outcome::Released);
    refused.actor = actor("dave", Role::Collector);
    refused.purpose = None;
    refused.outcome = Outcome::error(ErrorCode::Forbidden, "role collector may not get");
    for node in 0..3 {
        let mut r = refused.clone();
        r.node_id = format!("node-{}", node + 1);
        push(node, r);
    }
    // Keeps every log's time span covering request 3.
    for node in 0..3 {
        let name = format!("node-{}", node + 1);
        let mut health = get(&name, 0, 500, "admin", "rec/z", 9, Outcome::Allowed);
        health.action = "health".to_owned();
        health.key = None;
        health.request_id = None;
        push(node, health);
    }
    logs
}

#[test]
fn reconstructions_are_attributed_and_anomalies_flagged() {
    let report = build(2, &logs(), &ReportFilter::default());
    let rebuilt: Vec<(&str, &str, usize)> = report
        .reconstructions
        .iter()
        .map(|r| (r.who.subject.as_str(), r.key.as_str(), r.nodes.len()))
        .collect();
    assert_eq!(rebuilt, vec![("alice", "rec/a", 3), ("bob", "rec/b", 2)]);
    assert_eq!(report.reconstructions[0].purpose, "alice reads");
    assert_eq!(report.reconstructions[0].who.role, "reader");
    assert_eq!(report.refused.len(), 3);
    assert!(report.refused.iter().all(|e| e.who.subject == "dave"));
    assert!(report.anomalies.contains(&Anomaly::PartialRelease {
        request_id: RequestId([3; 16]).to_string(),
        key: "rec/a".to_owned(),
        who: Who::of(&actor("carol", Role::Reader)),
        releases: 1,
        threshold: 2,
        nodes: vec!["node-1".to_owned()],
    }));
    assert!(report.anomalies.iter().any(|a| matches!(a,
        Anomaly::Missing { request_id, missing_on, .. }
            if *request_id == RequestId([3; 16]).to_string() && missing_on == &["node-3"])));
    let text = report.to_text();
    assert!(
        text.contains("partial release") && text.contains("carol"),
        "{text}"
    );
    assert!(text.contains("Reconstructions (>= 2 shares released under one request id): 2"));
}

/// A get asks only k nodes for shares: a reconstruction logged on k of n nodes is the normal
/// case, not an anomaly, while a put missing on a node that was logging still is.
#[test]
fn a_get_from_k_nodes_is_not_missing_elsewhere_but_a_put_is() {
    let mut logs = logs();
    for (node, time) in [(0, 600), (1, 601)] {
        let name = format!("node-{}", node + 1);
        let mut entry = get(&name, 0, time, "erin", "rec/e", 6, Outcome::Released);
        entry.seq = logs[node].entries.len() as u64;
        logs[node].entries.push(entry);
    }
    for (node, log) in logs.iter_mut().enumerate().take(2) {
        let name = format!("node-{}", node + 1);
        let mut put = get(&name, 0, 610, "collector", "rec/p", 7, Outcome::Stored);
        put.action = "put".to_owned();
        put.purpose = None;
        put.seq = log.entries.len() as u64;
        log.entries.push(put);
    }
    // Every node keeps logging past both requests.
    for (node, log) in logs.iter_mut().enumerate() {
        let mut health = get(
            &format!("node-{}", node + 1),
            0,
            700,
            "admin",
            "rec/z",
            9,
            Outcome::Allowed,
        );
        health.action = "health".to_owned();
        health.key = None;
        health.request_id = None;
        health.seq = log.entries.len() as u64;
        log.entries.push(health);
    }
    let report = build(2, &logs, &ReportFilter::default());
    assert!(report
        .reconstructions
        .iter()
        .any(|r| r.who.subject == "erin" && r.nodes == ["node-1", "node-2"]));
    let missing: Vec<&str> = report
        .anomalies
        .iter()
        .filter_map(|a| match a {
            Anomaly::Missing { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    assert!(!missing.contains(&"rec/e"), "{:?}", report.anomalies);
    assert!(missing.contains(&"rec/p"), "{:?}", report.anomalies);
}

#[test]
fn filters_select_records_actors_and_times() {
    let logs = logs();
    let by_record = build(
        2,
        &logs,
        &ReportFilter {
            record: Some("rec/b".to_owned()),
            ..ReportFilter::default()
        },
    );
    assert_eq!(by_record.reconstructions.len(), 1);
    assert_eq!(by_record.history.len(), 3, "every node's entry about rec/b");
    let by_actor = build(
        2,
        &logs,
        &ReportFilter {
            actor: Some("alice".to_owned()),
            ..ReportFilter::default()
        },
    );
    assert_eq!(by_actor.reconstructions.len(), 1);
    assert!(by_actor.refused.is_empty());
    let fingerprint = hex::encode(blake3::hash(b"bob").as_bytes());
    let by_fingerprint = build(
        2,
        &logs,
        &ReportFilter {
            actor: Some(fingerprint[..10].to_owned()),
            ..ReportFilter::default()
        },
    );
    assert_eq!(by_fingerprint.reconstructions[0].who.subject, "bob");
    let since = build(
        2,
        &logs,
        &ReportFilter {
            since_micros: Some(250),
            ..ReportFilter::default()
        },
    );
    assert!(since.reconstructions.is_empty());
    assert_eq!(since.refused.len(), 3);
}

#[test]
fn times_format_and_parse() {
    assert_eq!(format_time(0), "1970-01-01T00:00:00.000000Z");
    let t = parse_time("2026-02-28T13:45:07Z").expect("parse");
    assert_eq!(format_time(t + 12), "2026-02-28T13:45:07.000012Z");
    assert_eq!(
        parse_time("2024-03-01"),
        parse_time("2024-02-29").map(|t| t + 86_400_000_000)
    );
    assert_eq!(parse_time("86400"), Some(86_400_000_000));
    for bad in [
        "2026-13-01",
        "yesterday",
        "2026-01-01T25:00:00Z",
        "1969-12-31",
    ] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
}
