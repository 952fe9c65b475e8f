//! The handler's answer to a [`Request::PutBatch`](bunsan_protocol::message::Request): each
//! envelope checked and stored as a single put would be, sharing one store hand-off and one
//! flush, and audited as one `put` entry per envelope.

use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::message::{ErrorCode, RemoteError, Response};
use bunsan_protocol::seal::Openers;
use rustls_pki_types::UnixTime;

use super::{bad_request, failure, outcome, refuse, Handler};
use crate::audit::AuditEvent;

impl Handler {
    /// A batch of puts: each envelope admitted and stored exactly as by a single put, the
    /// stores run together so that they share flushes, and one audit entry per envelope
    /// (action `put`, the batch's request id), all durable before the answer.
    pub(super) async fn put_batch(
        &self,
        event: AuditEvent,
        envelopes: Vec<ShareEnvelope>,
    ) -> Response {
        let now = UnixTime::now();
        // One key agreement per writer batch, not per envelope.
        let mut openers = Openers::default();
        let refusals: Vec<Option<Response>> = envelopes
            .iter()
            .map(|envelope| match envelope.header.tombstone {
                true => Some(bad_request(
                    "a put carries a share, not a tombstone; use delete",
                )),
                false => self.refusal(envelope, now, &mut openers),
            })
            .collect();
        drop(openers);
        let admitted: Vec<&ShareEnvelope> = envelopes
            .iter()
            .zip(&refusals)
            .filter(|(_, refusal)| refusal.is_none())
            .map(|(envelope, _)| envelope)
            .collect();
        let mut stored = self.store.put_many(&admitted).await.into_iter();
        let answers: Vec<Response> = refusals
            .into_iter()
            .map(|refusal| match refusal {
                Some(refusal) => refusal,
                None => match stored.next() {
                    Some(Ok(outcome)) => Response::Stored(outcome),
                    Some(Err(e)) => failure(&e),
                    None => refuse(ErrorCode::Unavailable, "the store lost a put's outcome"),
                },
            })
            .collect();
        let appends = envelopes.iter().zip(&answers).map(|(envelope, answer)| {
            let mut entry = event.clone();
            // Each record's entry reads as the put it is ([`Request::action`] of a put), so
            // audit trails and reports need not know about batches.
            entry.action = "put".to_owned();
            entry.key = Some(envelope.header.key.clone());
            entry.version = Some(envelope.header.version);
            self.audit.append(entry.answered(answer))
        });
        for appended in futures_util::future::join_all(appends).await {
            if let Err(e) = appended {
                tracing::error!(error = %e, "audit append failed: the batch answer is withheld");
                return refuse(
                    ErrorCode::Unavailable,
                    "audit log unavailable; nothing was released",
                );
            }
        }
        Response::StoredBatch(
            answers
                .into_iter()
                .map(|answer| match answer {
                    Response::Stored(outcome) => Ok(outcome),
                    Response::Error(error) => Err(error),
                    other => Err(RemoteError {
                        code: ErrorCode::Unavailable,
                        message: format!("unexpected answer {}", outcome(&other)),
                    }),
                })
                .collect(),
        )
    }
}
