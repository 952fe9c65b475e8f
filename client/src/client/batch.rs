//! Put batching: small records written at the same time travel, and are signed, together.
//!
//! A put of a record of at most [`BATCH_RECORD_MAX`] bytes is queued. One background task per
//! client takes whatever has queued up (at most `ClientOptions::put_batch_max` records and
//! [`BATCH_BYTES_MAX`] bytes) as soon as one of [`BATCHES_IN_FLIGHT`] slots is free, deals it
//! with one signature and one key agreement per node ([`dealing::deal_batch`]), and sends each
//! node one [`Request::PutBatch`]. Each node's answer is split back into one reply per record,
//! so every put still counts its own write quorum ([`Client::write`]) exactly as an unbatched
//! put does, and fails or succeeds on its own.
//!
//! Nothing waits for a batch to fill: with a slot free, a put leaves at once as a batch of one.
//! Batches grow only from puts that arrive while both slots are busy, as group commit does, so
//! a lone writer sees no added latency and a busy one pays one signature, n key agreements and
//! n requests per batch instead of per record. A slot frees once W nodes answered the batch
//! (or W can no longer be reached), so a down node slows no batch beyond its first answers.
//!
//! [`Client::write`]: super::Client

use std::sync::Arc;
use std::time::Duration;

use bunsan_protocol::dealing::{self, BatchRecord};
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::integrity::Signer;
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::message::{Request, Response, PUT_BATCH_MAX};
use bunsan_protocol::{RecordKey, RequestId, Version};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use super::background::Background;
use super::write::recipients;
use crate::error::{Error, NodeFailure, Result};
use crate::transport::Transport;

/// Records larger than this are put one by one: batching saves per-request work, which only
/// small records notice, and a batch must stay well under the frame limit.
pub const BATCH_RECORD_MAX: usize = 64 * 1024;

/// The most record bytes one batch carries.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Batches dealt and sent at once. Two keep both the client's dealing and the nodes busy while
/// the next batch fills.
pub const BATCHES_IN_FLIGHT: usize = 2;

/// One node's reply to one record's put, as [`super::Client::write`] counts them.
pub(super) type Reply = (usize, std::result::Result<Response, NodeFailure>);

/// What a queued put gets back once its batch is dealt: its replies, or why it was not sent.
type Dealt = Result<mpsc::UnboundedReceiver<Reply>>;

/// One put waiting for a batch.
struct Queued {
    key: RecordKey,
    version: Version,
    data: Zeroizing<Vec<u8>>,
    dealt: oneshot::Sender<Dealt>,
}

/// What a batch needs of its client.
pub(super) struct Context {
    pub(super) transport: Arc<Transport>,
    pub(super) manifest: Manifest,
    pub(super) signer: Arc<Signer>,
    pub(super) timeout: Duration,
    pub(super) inflight: Arc<tokio::sync::RwLock<()>>,
    pub(super) batch_max: usize,
}

/// The background batcher of a client's puts, started on first use.
#[derive(Default)]
pub(super) struct Batcher {
    task: Background<Queued>,
}

impl Batcher {
    /// Queues a put of `data` as `version` of `key` and waits until its batch is dealt and
    /// sent; then its nodes' replies arrive on the returned channel. `context` starts the
    /// batcher if it is not running.
    pub(super) async fn submit(
        &self,
        context: impl FnOnce() -> Result<Context>,
        key: &RecordKey,
        version: Version,
        data: &[u8],
    ) -> Result<mpsc::UnboundedReceiver<Reply>> {
        let (dealt, answer) = oneshot::channel();
        let queued = Queued {
            key: key.clone(),
            version,
            data: Zeroizing::new(data.to_vec()),
            dealt,
        };
        self.task.send(
            |queue| Ok::<_, Error>(tokio::spawn(run(Arc::new(context()?), queue))),
            [queued],
        )?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Sends what is queued and stops the batcher, waiting at most `timeout`; a later put
    /// starts a new one.
    pub(super) async fn finish(&self, timeout: Duration) {
        if !self.task.finish(timeout).await {
            tracing::debug!("puts still queued at close");
        }
    }
}

/// Takes batches off the queue whenever a slot is free, until the queue closes.
async fn run(context: Arc<Context>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let batch_max = context.batch_max.clamp(1, PUT_BATCH_MAX);
    while let Some(first) = queue.recv().await {
        // Wait for a slot first: what queues meanwhile joins this batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut bytes = first.data.len();
        let mut batch = vec![first];
        while batch.len() < batch_max && bytes < BATCH_BYTES_MAX {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.data.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        tokio::spawn(send(Arc::clone(&context), batch, slot));
    }
    // Batches still in flight hold their slots; wait for them so `finish` covers them.
    let _ = slots.acquire_many(BATCHES_IN_FLIGHT as u32).await;
}

/// Deals `batch`, sends each node its envelopes, and hands each record its replies.
async fn send(context: Arc<Context>, batch: Vec<Queued>, slot: OwnedSemaphorePermit) {
    let _inflight = context.inflight.clone().try_read_owned().ok();
    let n = context.manifest.nodes.len();
    let recipients = recipients(&context.transport, &context.manifest).await;
    let records: Vec<BatchRecord<'_>> = batch
        .iter()
        .map(|queued| BatchRecord {
            key: &queued.key,
            version: queued.version,
            record: &queued.data,
        })
        .collect();
    let dealt = dealing::deal_batch(
        &records,
        context.manifest.scheme,
        &recipients,
        &context.signer,
        &mut rand::rng(),
    );
    drop(records);
    // Regrouped by share index: what each node is sent.
    let mut by_share: Vec<Vec<ShareEnvelope>> = (0..n).map(|_| Vec::new()).collect();
    match dealt {
        Ok(by_record) => {
            for envelopes in by_record {
                for (share, envelope) in by_share.iter_mut().zip(envelopes) {
                    share.push(envelope);
                }
            }
        }
        Err(e) => {
            for queued in batch {
                let _ = queued.dealt.send(Err(Error::Protocol(e.clone())));
            }
            return;
        }
    }
    // Each record's replies go to its own put; a put that stopped listening is skipped.
    let replies: Vec<mpsc::UnboundedSender<Reply>> = batch
        .into_iter()
        .map(|queued| {
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = queued.dealt.send(Ok(rx));
            tx
        })
        .collect();
    let request_id = RequestId::random(&mut rand::rng());
    let (answered, mut answers) = mpsc::unbounded_channel();
    for position in 0..n {
        let share = usize::from(context.transport.node(position).index.get()) - 1;
        let envelopes = std::mem::take(&mut by_share[share]);
        let request = Request::PutBatch {
            request_id,
            envelopes,
        };
        // Encoded now and the request dropped, so the batch holds each share once, as a frame.
        let frame = context.transport.encode(position, &request);
        drop(request);
        let transport = Arc::clone(&context.transport);
        let answered = answered.clone();
        let timeout = context.timeout;
        tokio::spawn(async move {
            let reply = match frame {
                Ok(frame) => transport.call_frame(position, frame, timeout).await,
                Err(failure) => Err(failure),
            };
            let _ = answered.send((position, reply));
        });
    }
    drop((answered, by_share));
    let needed = usize::from(context.manifest.write_quorum);
    let (mut heard, mut failed) = (0, 0);
    let mut slot = Some(slot);
    while let Some((position, reply)) = answers.recv().await {
        heard += 1;
        let node = context.transport.node(position).id.clone();
        match split(&node, reply, replies.len()) {
            Ok(per_record) => {
                for (tx, answer) in replies.iter().zip(per_record) {
                    let _ = tx.send((position, answer));
                }
            }
            Err(failure) => {
                failed += 1;
                for tx in &replies {
                    let _ = tx.send((position, Err(failure.clone())));
                }
            }
        }
        if heard - failed >= needed || failed > n - needed.min(n) || heard == n {
            slot.take();
        }
    }
}

/// One node's answer to a batch of `records`, as each record's reply: a refusal of the whole
/// batch is every record's refusal, and an answer of the wrong shape fails them all.
fn split(
    node: &str,
    reply: std::result::Result<Response, NodeFailure>,
    records: usize,
) -> std::result::Result<Vec<std::result::Result<Response, NodeFailure>>, NodeFailure> {
    match reply? {
        Response::StoredBatch(outcomes) if outcomes.len() == records => Ok(outcomes
            .into_iter()
            .map(|outcome| {
                Ok(match outcome {
                    Ok(outcome) => Response::Stored(outcome),
                    Err(error) => Response::Error(error),
                })
            })
            .collect()),
        Response::StoredBatch(outcomes) => Err(NodeFailure {
            node: node.to_owned(),
            reason: format!(
                "answered {} outcomes to a batch of {records} puts",
                outcomes.len()
            ),
            code: None,
        }),
        Response::Error(error) => Ok((0..records)
            .map(|_| Ok(Response::Error(error.clone())))
            .collect()),
        other => Err(super::unexpected(node.to_owned(), "put-batch", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunsan_protocol::message::{ErrorCode, PutOutcome, RemoteError};

    fn refusal(code: ErrorCode) -> RemoteError {
        RemoteError {
            code,
            message: "no".to_owned(),
        }
    }

    #[test]
    fn a_batch_answer_becomes_one_reply_per_record() {
        let answer = Response::StoredBatch(vec![
            Ok(PutOutcome::Stored),
            Err(refusal(ErrorCode::BadSignature)),
            Ok(PutOutcome::AlreadyStored),
        ]);
        let replies = split("node-1", Ok(answer), 3).expect("three replies");
        assert_eq!(
            replies,
            vec![
                Ok(Response::Stored(PutOutcome::Stored)),
                Ok(Response::Error(refusal(ErrorCode::BadSignature))),
                Ok(Response::Stored(PutOutcome::AlreadyStored)),
            ]
        );
    }

    #[test]
    fn a_refused_or_misshapen_batch_answers_every_record_alike() {
        let refused = split(
            "node-1",
            Ok(Response::Error(refusal(ErrorCode::Forbidden))),
            2,
        )
        .expect("replies");
        assert_eq!(
            refused,
            vec![Ok(Response::Error(refusal(ErrorCode::Forbidden))); 2]
        );
        let short = split("node-2", Ok(Response::StoredBatch(vec![])), 2).expect_err("failure");
        assert_eq!(short.node, "node-2");
        assert!(short.reason.contains("0 outcomes"), "{}", short.reason);
        let other = split("node-3", Ok(Response::NotFound), 1).expect_err("failure");
        assert_eq!(other.node, "node-3");
        let failed = NodeFailure {
            node: "node-4".to_owned(),
            reason: "timed out".to_owned(),
            code: None,
        };
        assert_eq!(split("node-4", Err(failed.clone()), 3), Err(failed));
    }
}
