//! The handler with its audit log: every answer, refusals included, is logged; nothing is
//! answered, and above all no share released, when the log cannot be written.

use std::sync::Arc;

use bunsan_protocol::audit::wire::{AuditAnswer, AuditQuery};
use bunsan_protocol::audit::{Actor, AuditEntry, Outcome, ACTION_GET};
use bunsan_protocol::message::{ErrorCode, PutOutcome, Request, Response};
use bunsan_protocol::role::{PeerIdentity, Role};
use bunsan_protocol::{Purpose, RecordKey, RequestId, ShareIndex};

use super::{AuditLog, AuditOptions, MemoryAuditStore};
use crate::handler::Handler;
use crate::store::memory::MemoryStore;

fn peer(role: Role) -> PeerIdentity {
    PeerIdentity {
        role,
        name: format!("test-{role}"),
        fingerprint: [role as u8; 32],
    }
}

fn key() -> RecordKey {
    RecordKey::new("clinic/p1").expect("key")
}

fn put() -> Request {
    Request::Put {
        request_id: RequestId([1; 16]),
        // A genuine dealing: the handler checks signature, chain and commitment first.
        envelope: crate::handler::tests::share(key().as_str(), 7, 1, &[5; 32]),
    }
}

fn get() -> Request {
    Request::Get {
        request_id: RequestId([2; 16]),
        key: key(),
        purpose: Some(Purpose::new("treatment", "ward round").expect("purpose")),
        version: None,
    }
}

async fn handler(store: &MemoryAuditStore) -> Handler {
    let log = AuditLog::open(
        "node-1",
        Arc::new(store.clone()),
        None,
        AuditOptions::default(),
    )
    .await
    .expect("log");
    Handler::new(
        "node-1",
        ShareIndex::new(1).expect("index"),
        Arc::new(MemoryStore::new()),
        crate::handler::tests::checks(),
    )
    .with_audit(log, None)
}

async fn entries(store: &MemoryAuditStore) -> Vec<AuditEntry> {
    use super::AuditStore;
    store
        .read(0, 100)
        .await
        .expect("read")
        .iter()
        .map(|r| AuditEntry::decode(&r.entry).expect("decode"))
        .collect()
}

#[tokio::test]
async fn every_answer_and_every_refusal_is_logged_with_who_what_and_why() {
    let store = MemoryAuditStore::new();
    let handler = handler(&store).await;
    let collector = peer(Role::Collector);
    let reader = peer(Role::Reader);
    assert_eq!(
        handler.handle(&collector, put()).await,
        Response::Stored(PutOutcome::Stored)
    );
    assert!(matches!(
        handler.handle(&reader, get()).await,
        Response::Share(_)
    ));
    let refused = handler.handle(&collector, get()).await;
    assert!(matches!(refused, Response::Error(ref e) if e.code == ErrorCode::Forbidden));
    let entries = entries(&store).await;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].outcome, Outcome::Stored);
    assert_eq!(entries[0].version.map(|v| v.clock_micros), Some(7));
    let release = &entries[1];
    assert_eq!(release.action, ACTION_GET);
    assert_eq!(release.outcome, Outcome::Released);
    assert_eq!(release.key, Some(key()));
    assert_eq!(release.request_id, Some(RequestId([2; 16])));
    assert_eq!(
        release.purpose.as_ref().map(|p| p.text()),
        Some("ward round")
    );
    assert_eq!(release.actor, Actor::of(&reader));
    assert!(matches!(
        entries[2].outcome,
        Outcome::Refused {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    assert_eq!(entries[2].actor, Actor::of(&collector));
}

#[tokio::test]
async fn no_share_leaves_when_the_audit_store_cannot_be_written() {
    let store = MemoryAuditStore::new();
    let handler = handler(&store).await;
    handler.handle(&peer(Role::Collector), put()).await;
    store.set_failing(true);
    match handler.handle(&peer(Role::Reader), get()).await {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::Unavailable);
            assert!(e.message.contains("audit log unavailable"), "{}", e.message);
        }
        other => panic!("a share left the node unaudited: {other:?}"),
    }
    store.set_failing(false);
    assert!(
        matches!(
            handler.handle(&peer(Role::Reader), get()).await,
            Response::Error(_)
        ),
        "fails closed until restart"
    );
}

#[tokio::test]
async fn only_auditors_read_the_log_and_only_nodes_witness() {
    let store = MemoryAuditStore::new();
    let handler = handler(&store).await;
    let read = Request::Audit {
        request_id: RequestId([3; 16]),
        query: AuditQuery::Entries { from: 0, limit: 10 },
    };
    for role in Role::ALL {
        let answer = handler.handle(&peer(role), read.clone()).await;
        match (role, answer) {
            (Role::Auditor, Response::Audit(AuditAnswer::Entries { .. })) => {}
            (Role::Auditor, other) => panic!("auditor refused: {other:?}"),
            (_, Response::Error(e)) => assert_eq!(e.code, ErrorCode::Forbidden, "{role}"),
            (_, other) => panic!("{role} read the audit log: {other:?}"),
        }
    }
    let witness = Request::Audit {
        request_id: RequestId([4; 16]),
        query: AuditQuery::WitnessCheckpoint { from_size: 0 },
    };
    for role in [Role::Auditor, Role::Reader, Role::Admin] {
        assert!(matches!(
            handler.handle(&peer(role), witness.clone()).await,
            Response::Error(e) if e.code == ErrorCode::Forbidden
        ));
    }
}
