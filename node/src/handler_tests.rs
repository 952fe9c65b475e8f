//! Unit tests of [`Handler`](super::Handler): roles, envelope checks, listing, status.

use std::sync::Arc;

use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::message::{ErrorCode, PutOutcome, Request, Response, LIST_LIMIT_MAX};
use bunsan_protocol::role::{PeerIdentity, Role};
use bunsan_protocol::{Purpose, RecordKey, RequestId, Scheme, ShareIndex, Version, WriterId};

use super::{action, Handler};
use crate::store::memory::MemoryStore;

fn handler() -> Handler {
    Handler::new("node-1", index(1), Arc::new(MemoryStore::new()))
}

fn index(i: u8) -> ShareIndex {
    ShareIndex::new(i).expect("index")
}

fn peer(role: Role) -> PeerIdentity {
    PeerIdentity {
        role,
        name: format!("test-{role}"),
        fingerprint: [0; 32],
    }
}

fn key(name: &str) -> RecordKey {
    RecordKey::new(name).expect("key")
}

fn version(clock: u64) -> Version {
    Version {
        clock_micros: clock,
        writer: WriterId(1),
    }
}

fn share(name: &str, clock: u64, at: u8, payload: &[u8]) -> ShareEnvelope {
    let scheme = Scheme::new(2, 3).expect("scheme");
    ShareEnvelope::data(
        key(name),
        version(clock),
        scheme,
        index(at),
        payload.to_vec(),
    )
}

fn tombstone(name: &str, clock: u64) -> ShareEnvelope {
    ShareEnvelope::tombstone(
        key(name),
        version(clock),
        Scheme::new(2, 3).expect("scheme"),
        index(1),
    )
}

fn put(envelope: ShareEnvelope) -> Request {
    Request::Put {
        request_id: RequestId([1; 16]),
        envelope,
    }
}

fn delete(tombstone: ShareEnvelope) -> Request {
    Request::Delete {
        request_id: RequestId([2; 16]),
        tombstone,
    }
}

fn get(name: &str, purpose: bool) -> Request {
    Request::Get {
        request_id: RequestId([3; 16]),
        key: key(name),
        purpose: purpose.then(|| Purpose::new("treatment", "follow-up").expect("purpose")),
    }
}

fn list(start_after: Option<&str>, limit: u32, include_tombstones: bool) -> Request {
    Request::List {
        request_id: RequestId([4; 16]),
        prefix: "a/".to_owned(),
        start_after: start_after.map(key),
        limit,
        include_tombstones,
    }
}

fn error_code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error(e) => Some(e.code),
        _ => None,
    }
}

fn listed(response: Response) -> (Vec<String>, Option<String>) {
    match response {
        Response::Listing { entries, next } => (
            entries.iter().map(|e| e.key.as_str().to_owned()).collect(),
            next.map(|k| k.as_str().to_owned()),
        ),
        other => panic!("expected a listing, got {other:?}"),
    }
}

#[tokio::test]
async fn every_role_gets_exactly_its_actions() {
    let h = handler();
    let requests = [
        Request::Health,
        put(share("a/1", 1, 1, b"x")),
        get("a/1", true),
        delete(tombstone("a/1", 9)),
        list(None, 10, true),
        Request::Status,
    ];
    for role in Role::ALL {
        for request in &requests {
            let allowed = role.allows(action(request));
            let response = h.handle(&peer(role), request.clone()).await;
            match (&response, allowed) {
                (Response::Error(e), false) => {
                    assert_eq!(e.code, ErrorCode::Forbidden);
                    assert!(e.message.contains(role.as_str()), "{}", e.message);
                    assert!(e.message.contains(request.action()), "{}", e.message);
                }
                (r, true) => assert_ne!(error_code(r), Some(ErrorCode::Forbidden), "{role}"),
                (r, false) => panic!("{role} {} was not refused: {r:?}", request.action()),
            }
        }
    }
}

#[tokio::test]
async fn envelopes_must_fit_the_node_and_the_request() {
    let h = handler();
    let collector = peer(Role::Collector);
    let wrong_node = h.handle(&collector, put(share("a/1", 1, 2, b"x"))).await;
    assert_eq!(error_code(&wrong_node), Some(ErrorCode::WrongNode));
    let tomb_put = h.handle(&collector, put(tombstone("a/1", 1))).await;
    assert_eq!(error_code(&tomb_put), Some(ErrorCode::BadRequest));
    let share_delete = h
        .handle(&peer(Role::Admin), delete(share("a/1", 1, 1, b"x")))
        .await;
    assert_eq!(error_code(&share_delete), Some(ErrorCode::BadRequest));
    let stored = h.handle(&collector, put(share("a/1", 5, 1, b"x"))).await;
    assert_eq!(stored, Response::Stored(PutOutcome::Stored));
    let conflict = h.handle(&collector, put(share("a/1", 5, 1, b"y"))).await;
    assert_eq!(error_code(&conflict), Some(ErrorCode::Conflict));
    let older = h.handle(&collector, put(share("a/1", 4, 1, b"x"))).await;
    assert_eq!(
        older,
        Response::Stored(PutOutcome::Superseded {
            current: version(5)
        })
    );
}

#[tokio::test]
async fn get_needs_a_purpose_and_returns_the_highest_version() {
    let h = handler();
    let reader = peer(Role::Reader);
    h.handle(&peer(Role::Collector), put(share("a/1", 1, 1, b"old")))
        .await;
    h.handle(&peer(Role::Collector), put(share("a/1", 2, 1, b"new")))
        .await;
    match h.handle(&reader, get("a/1", false)).await {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("purpose is required"), "{}", e.message);
        }
        other => panic!("released without a purpose: {other:?}"),
    }
    assert_eq!(
        h.handle(&reader, get("a/1", true)).await,
        Response::Share(share("a/1", 2, 1, b"new"))
    );
    assert_eq!(
        h.handle(&reader, get("a/9", true)).await,
        Response::NotFound
    );
    h.handle(&peer(Role::Admin), delete(tombstone("a/1", 3)))
        .await;
    assert_eq!(
        h.handle(&reader, get("a/1", true)).await,
        Response::Share(tombstone("a/1", 3))
    );
}

#[tokio::test]
async fn listing_pages_and_filters_tombstones() {
    let h = handler();
    let admin = peer(Role::Admin);
    for i in 0..5 {
        h.handle(
            &peer(Role::Collector),
            put(share(&format!("a/{i}"), 1, 1, b"x")),
        )
        .await;
    }
    h.handle(&peer(Role::Collector), put(share("b/0", 1, 1, b"x")))
        .await;
    h.handle(&admin, delete(tombstone("a/1", 2))).await;
    h.handle(&admin, delete(tombstone("a/3", 2))).await;
    let first = listed(h.handle(&admin, list(None, 2, false)).await);
    assert_eq!(
        first,
        (vec!["a/0".into(), "a/2".into()], Some("a/2".into()))
    );
    let second = listed(h.handle(&admin, list(Some("a/2"), 2, false)).await);
    assert_eq!(second, (vec!["a/4".into()], None));
    let all = listed(h.handle(&admin, list(None, 10, true)).await);
    assert_eq!((all.0.len(), all.1), (5, None));
    let zero = h.handle(&admin, list(None, 0, true)).await;
    assert_eq!(error_code(&zero), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn list_limits_are_capped() {
    let store = Arc::new(MemoryStore::new());
    let h = Handler::new("node-1", index(1), store.clone());
    for i in 0..LIST_LIMIT_MAX + 3 {
        h.handle(
            &peer(Role::Collector),
            put(share(&format!("a/{i:06}"), 1, 1, b"x")),
        )
        .await;
    }
    let (entries, next) = listed(
        h.handle(&peer(Role::Admin), list(None, u32::MAX, true))
            .await,
    );
    assert_eq!(entries.len(), LIST_LIMIT_MAX as usize);
    assert_eq!(next.as_deref(), entries.last().map(String::as_str));
}

#[tokio::test]
async fn health_and_status_describe_the_node() {
    let h = handler();
    h.handle(&peer(Role::Collector), put(share("a/1", 1, 1, &[0; 10])))
        .await;
    h.handle(&peer(Role::Collector), put(share("a/2", 1, 1, &[0; 5])))
        .await;
    h.handle(&peer(Role::Admin), delete(tombstone("a/2", 2)))
        .await;
    match h.handle(&peer(Role::Auditor), Request::Health).await {
        Response::Health(health) => assert_eq!(
            (health.node_id.as_str(), health.index),
            ("node-1", index(1))
        ),
        other => panic!("{other:?}"),
    }
    match h.handle(&peer(Role::Admin), Request::Status).await {
        Response::Status(s) => assert_eq!((s.records, s.tombstones, s.bytes), (1, 1, 10)),
        other => panic!("{other:?}"),
    }
}
