//! Put batching end to end: concurrent small puts travel and are signed together (envelope
//! format 3), each still acknowledged, stored and read back on its own; large records and a
//! client with batching turned off write format 2.

use std::time::Duration;

use bunsan_client::{ClientOptions, BATCH_RECORD_MAX};
use bunsan_protocol::batch::BATCH_FORMAT;
use bunsan_protocol::envelope::{ShareEnvelope, ENVELOPE_FORMAT};
use bunsan_protocol::message::{Request, Response};
use bunsan_protocol::{RecordKey, RequestId};
use bunsan_tests::{client, key, pattern, purpose, start_cluster};

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");

/// Node `node`'s stored envelope of `k`, fetched raw by a reader.
async fn stored(reader: &bunsan_client::Client, node: &str, k: &RecordKey) -> ShareEnvelope {
    let request = Request::Get {
        request_id: RequestId([9; 16]),
        key: k.clone(),
        purpose: Some(purpose()),
        version: None,
    };
    match reader.call(node, &request).await.expect("get") {
        Response::Share(envelope) | Response::ShareWithOlder { envelope, .. } => envelope,
        other => panic!("{node} holds no share of {k}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_puts_are_batched_and_each_comes_back_on_its_own() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let collector = client(&cluster, "collector");
    let reader = client(&cluster, "reader");
    let records: Vec<(RecordKey, Vec<u8>)> = (0..48u64)
        .map(|i| {
            (
                key(&format!("batch/{i}")),
                pattern(100 + 37 * i as usize, i),
            )
        })
        .chain([(key("batch/large"), pattern(BATCH_RECORD_MAX + 1, 99))])
        .collect();
    let receipts =
        futures_util::future::join_all(records.iter().map(|(k, record)| collector.put(k, record)))
            .await;
    for (receipt, (k, _)) in receipts.iter().zip(&records) {
        let receipt = receipt.as_ref().expect("put");
        assert_eq!(&receipt.key, k);
        assert_eq!(receipt.acked.len(), 5, "{k}: every node acknowledges");
    }
    let mut largest_batch = 0;
    for (k, record) in &records {
        let back = reader.get(k, &purpose()).await.expect("get");
        assert!(back.as_slice() == record.as_slice(), "{k} differs");
        let envelope = stored(&reader, "node-2", k).await;
        if record.len() > BATCH_RECORD_MAX {
            assert_eq!(envelope.format, ENVELOPE_FORMAT, "{k} is put on its own");
            assert!(envelope.batch.is_none());
        } else {
            assert_eq!(envelope.format, BATCH_FORMAT, "{k} is put in a batch");
            let proof = envelope.batch.expect("a batch proof");
            largest_batch = largest_batch.max(proof.size);
        }
    }
    assert!(
        largest_batch > 1,
        "48 puts at once never shared a batch (largest {largest_batch})"
    );
    collector.close().await;
    cluster.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_turned_off_writes_each_record_signed_on_its_own() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let options = ClientOptions {
        timeout: Duration::from_secs(5),
        put_batch_max: 1,
        ..ClientOptions::default()
    };
    let collector = cluster.client_for("collector", options).expect("collector");
    let reader = client(&cluster, "reader");
    let records: Vec<(RecordKey, Vec<u8>)> = (0..6u64)
        .map(|i| (key(&format!("single/{i}")), pattern(64, i)))
        .collect();
    for receipt in
        futures_util::future::join_all(records.iter().map(|(k, record)| collector.put(k, record)))
            .await
    {
        assert_eq!(receipt.expect("put").acked.len(), 5);
    }
    for (k, record) in &records {
        assert!(reader.get(k, &purpose()).await.expect("get").as_slice() == record.as_slice());
        assert_eq!(stored(&reader, "node-4", k).await.format, ENVELOPE_FORMAT);
    }
    cluster.stop().await.expect("clean stop");
}
