//! The reading half of [`Client`]: fan a get out to every node, decide from the verified
//! answers (module `read`), and fall back to the older versions nodes keep when the newest
//! one does not rebuild.

use bunsan_protocol::message::{Request, Response};
use bunsan_protocol::{Purpose, RecordKey, RequestId};
use tokio::sync::mpsc;

use super::{unexpected, Client, GetOutcome};
use crate::error::{Error, NodeFailure, Result};
use crate::read::{Decision, Gather};

type Replies = mpsc::UnboundedReceiver<(usize, std::result::Result<Response, NodeFailure>)>;

impl Client {
    /// Asks every node for its share and rebuilds the record from k verified shares of the
    /// highest version seen, answering as soon as R nodes have been heard and the record
    /// passes its end-to-end check.
    ///
    /// Every share is checked (header signature against the cluster CA, commitment) before it
    /// counts; a failing one is reported in [`GetOutcome::bad_shares`]. If k verified shares
    /// do not rebuild a record that passes the check, the get waits for more and decodes
    /// robustly; if that fails too, it is [`Error::Integrity`]: never a wrong record.
    ///
    /// When no version the nodes answered with has k shares (later writes failed partway and
    /// each reached a few nodes), the get asks the nodes that still keep an older version for
    /// it, newest first: so an acknowledged write reads back until a newer one is complete.
    pub async fn get_versioned(&self, key: &RecordKey, purpose: &Purpose) -> Result<GetOutcome> {
        let request_id = RequestId::random(&mut rand::rng());
        let request = |version| Request::Get {
            request_id,
            key: key.clone(),
            purpose: Some(purpose.clone()),
            version,
        };
        let k = self.manifest.scheme.threshold().as_usize();
        let mut gather = Gather::new(key, &self.trust);
        let everyone = self.transport_len();
        let replies = self.fan_out(vec![request(None); everyone]);
        if let Some(answer) = self.answer(&mut gather, replies, everyone).await {
            return answer;
        }
        // Nothing the nodes hold as their newest rebuilds: try what they keep under it.
        while let Some((version, holders)) = gather.next_kept(k) {
            tracing::info!(%key, %version, nodes = holders.len(),
                "the newest versions do not rebuild; reading a kept older version");
            let count = holders.len();
            let replies = self.fan_out_to(
                holders
                    .into_iter()
                    .map(|position| (position, request(Some(version)))),
            );
            if let Some(answer) = self.answer(&mut gather, replies, count).await {
                return answer;
            }
        }
        if gather.not_found >= self.manifest.read_quorum() && !gather.found_any() {
            return Err(Error::NotFound { key: key.clone() });
        }
        Err(Error::NotEnoughShares {
            key: key.clone(),
            found: gather.best_count(),
            needed: k,
            failures: gather.all_failures(),
        })
    }

    /// Files the `expected` replies of one round into `gather` and answers once the decision
    /// is final; `None` when the round ended without an answer.
    async fn answer(
        &self,
        gather: &mut Gather<'_>,
        mut replies: Replies,
        expected: usize,
    ) -> Option<Result<GetOutcome>> {
        let k = self.manifest.scheme.threshold().as_usize();
        let read_quorum = self.manifest.read_quorum();
        let key = gather.key().clone();
        let mut received = 0;
        loop {
            let reply = replies.recv().await;
            let last = reply.is_none();
            if let Some((position, reply)) = reply {
                received += 1;
                self.absorb(gather, position, reply);
            }
            if gather.heard() >= read_quorum || last {
                match gather.decide(k, last) {
                    Some(Decision::Deleted(version)) => {
                        return Some(Err(Error::Deleted { key, version }))
                    }
                    Some(Decision::Combine(generation)) => match gather.rebuild(generation) {
                        Ok(rebuilt) => {
                            let version = generation.0;
                            self.clock_observe(version);
                            // Keep checking the other nodes' answers for a short grace, so a
                            // lying or rotten node is reported even when its share was not
                            // needed; then check the unneeded shares for consistency too.
                            let grace = tokio::time::Instant::now() + self.options.read_grace;
                            while received < expected {
                                match tokio::time::timeout_at(grace, replies.recv()).await {
                                    Ok(Some((position, reply))) => {
                                        received += 1;
                                        self.absorb(gather, position, reply)
                                    }
                                    _ => break,
                                }
                            }
                            gather.audit(generation);
                            return Some(Ok(GetOutcome {
                                version,
                                data: rebuilt.record,
                                sources: gather.sources(generation),
                                failures: std::mem::take(&mut gather.failures),
                                bad_shares: std::mem::take(&mut gather.bad),
                            }));
                        }
                        // More shares may still come and make it rebuild (or name the bad
                        // ones); with every node of the round heard, it is final.
                        Err(source) if last || received == expected => {
                            return Some(Err(Error::Integrity {
                                key,
                                version: generation.0,
                                bad_shares: std::mem::take(&mut gather.bad),
                                source,
                            }))
                        }
                        Err(_) => {}
                    },
                    None => {}
                }
            }
            if last {
                return None;
            }
        }
    }

    /// Files one node's answer to a get.
    fn absorb(
        &self,
        gather: &mut Gather<'_>,
        position: usize,
        reply: std::result::Result<Response, NodeFailure>,
    ) {
        let node = self.transport.node(position);
        let id = node.id.clone();
        match reply {
            Ok(Response::Share(envelope)) => gather.add(id, node.index, envelope),
            Ok(Response::ShareWithOlder { envelope, older }) => {
                gather.keeps(position, &older);
                gather.add(id, node.index, envelope)
            }
            Ok(Response::NotFound) => gather.not_found += 1,
            Ok(Response::Error(error)) => gather.failures.push(NodeFailure::refused(id, &error)),
            Ok(other) => gather.failures.push(unexpected(id, "get", &other)),
            Err(failure) => gather.failures.push(failure),
        }
    }
}
