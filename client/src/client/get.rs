//! The reading half of [`Client`]: ask k nodes for their shares (and probe more when the read
//! quorum needs them), decide from the verified answers (module `read`), ask the other nodes
//! when that does not settle it, and fall back to the older versions nodes keep when the
//! newest one does not rebuild.

use bunsan_protocol::message::{Request, Response};
use bunsan_protocol::{Purpose, RecordKey, RequestId};
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::{unexpected, Client, GetOutcome};
use crate::error::{Error, NodeFailure, Result};
use crate::read::{Decision, Gather};

type Replies = mpsc::UnboundedReceiver<(usize, std::result::Result<Response, NodeFailure>)>;

/// Where one round of a get stands.
struct Round {
    /// Replies the requests sent so far will bring (every request brings exactly one).
    expected: usize,
    /// The node positions of the replies filed so far.
    answered: Vec<usize>,
    /// Whether the get may end on what it has once every reply is in (no node is left to ask).
    settling: bool,
    /// When to stop waiting and ask more nodes, if the round has not settled by then.
    widen_at: Option<tokio::time::Instant>,
}

impl Round {
    /// A round after which no node is left to ask for the newest version.
    fn settling(expected: usize) -> Self {
        Self {
            expected,
            answered: Vec::new(),
            settling: true,
            widen_at: None,
        }
    }
}

impl Client {
    /// Rebuilds the record from k verified shares of the newest version a read quorum holds.
    ///
    /// A get asks k nodes for their shares (those whose last call answered first, in turns),
    /// and, when the read quorum R is larger than k, R − k more only which version they hold
    /// ([`Request::Head`]); so a record costs k shares of transfer and node work, not n. If
    /// those answers do not settle it (a node failed or is behind, a share is bad, a probed
    /// node holds a newer version or a tombstone), the other nodes are asked for their shares
    /// too. With
    /// [`ClientOptions::read_all_shares`](super::ClientOptions::read_all_shares) every node
    /// is asked for its share at once.
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
        if self.options.read_all_shares || k >= everyone {
            let mut replies = self.fan_out(vec![request(None); everyone]);
            let mut round = Round::settling(everyone);
            if let Some(answer) = self.answer(&mut gather, &mut replies, &mut round).await {
                return answer;
            }
        } else {
            // k nodes for shares, and only as many probes as the read quorum needs on top:
            // none when R = k (3-of-5 with W = 4), since the newest acknowledged write is on
            // at least one of any R nodes.
            let read_quorum = self.manifest.read_quorum();
            let turn = self.next_reader.fetch_add(1, Ordering::Relaxed);
            let order = self.transport.by_preference(turn);
            let (readers, others) = order.split_at(k);
            let (probed, _) = others.split_at(read_quorum.saturating_sub(k).min(others.len()));
            let probe = Request::Head {
                request_id,
                key: key.clone(),
            };
            let first = readers
                .iter()
                .map(|&position| (position, request(None)))
                .chain(probed.iter().map(|&position| (position, probe.clone())));
            // One channel for both rounds: answers of the first that come after the second
            // started still count.
            let (sender, mut replies) = mpsc::unbounded_channel();
            self.fan_out_into(&sender, first);
            let mut round = Round {
                expected: readers.len() + probed.len(),
                answered: Vec::new(),
                settling: false,
                widen_at: Some(tokio::time::Instant::now() + self.options.read_hedge),
            };
            if let Some(answer) = self.answer(&mut gather, &mut replies, &mut round).await {
                return answer;
            }
            // Nodes still silent at the hedge go last in the next gets, before their calls
            // fail (a stopped node's connection attempt takes `connect_timeout` to give up).
            for &position in readers.iter().chain(probed) {
                if !round.answered.contains(&position) {
                    self.transport.suspect(position);
                }
            }
            // Those k shares did not settle it (a node failed, is slow or is behind, a share is
            // bad, a probed node holds something newer): ask every other node for its share,
            // unless a read quorum already said the record does not exist.
            let absent = gather.not_found >= read_quorum && !gather.found_any();
            let more: Vec<usize> = match absent {
                true => Vec::new(),
                // A probed node is asked too unless it answered that it holds nothing (or
                // failed): one still silent may hold the newest version.
                false => others
                    .iter()
                    .copied()
                    .filter(|&position| {
                        !probed.contains(&position)
                            || !round.answered.contains(&position)
                            || gather.hinted(&self.transport.node(position).id)
                    })
                    .collect(),
            };
            tracing::debug!(%key, nodes = more.len(), answered = round.answered.len(),
                "the first k shares do not answer the get; asking the other nodes");
            round.expected += more.len();
            round.settling = true;
            round.widen_at = None;
            self.fan_out_into(
                &sender,
                more.into_iter().map(|position| (position, request(None))),
            );
            drop(sender);
            if let Some(answer) = self.answer(&mut gather, &mut replies, &mut round).await {
                return answer;
            }
        }
        // Nothing the nodes hold as their newest rebuilds: try what they keep under it.
        while let Some((version, holders)) = gather.next_kept(k) {
            tracing::info!(%key, %version, nodes = holders.len(),
                "the newest versions do not rebuild; reading a kept older version");
            let mut round = Round::settling(holders.len());
            let mut replies = self.fan_out_to(
                holders
                    .into_iter()
                    .map(|position| (position, request(Some(version)))),
            );
            if let Some(answer) = self.answer(&mut gather, &mut replies, &mut round).await {
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

    /// Files the replies of `round` into `gather` and answers once the decision is final;
    /// `None` when the round ended without an answer, or reached its `widen_at` first. Only a
    /// settling round may end the get on what it has: after the others, more nodes can still
    /// be asked.
    async fn answer(
        &self,
        gather: &mut Gather<'_>,
        replies: &mut Replies,
        round: &mut Round,
    ) -> Option<Result<GetOutcome>> {
        let k = self.manifest.scheme.threshold().as_usize();
        let read_quorum = self.manifest.read_quorum();
        let key = gather.key().clone();
        let settling = round.settling;
        loop {
            let reply = match round.widen_at {
                _ if round.answered.len() == round.expected => None,
                Some(at) => match tokio::time::timeout_at(at, replies.recv()).await {
                    Ok(reply) => reply,
                    Err(_) => return None,
                },
                None => replies.recv().await,
            };
            let mut last = reply.is_none();
            if let Some((position, reply)) = reply {
                round.answered.push(position);
                self.absorb(gather, position, reply);
                last = round.answered.len() == round.expected;
            }
            if gather.heard() >= read_quorum || last {
                match gather.decide(k, last && settling) {
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
                            while round.answered.len() < round.expected {
                                match tokio::time::timeout_at(grace, replies.recv()).await {
                                    Ok(Some((position, reply))) => {
                                        round.answered.push(position);
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
                        Err(source) if settling && last => {
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
            Ok(Response::Head(entry)) => gather.hint(id, &entry),
            Ok(Response::NotFound) => gather.not_found += 1,
            Ok(Response::Error(error)) => gather.failures.push(NodeFailure::refused(id, &error)),
            Ok(other) => gather.failures.push(unexpected(id, "get", &other)),
            Err(failure) => gather.failures.push(failure),
        }
    }
}
