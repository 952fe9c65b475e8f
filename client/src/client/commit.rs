//! Commits: once a write met its quorum, the nodes that kept older versions under it are told
//! they may drop them (`Request::Commit`).
//!
//! A commit only frees space, so nothing waits for it: writes hand their commits to one
//! background task per client, which sends whatever has queued up as one batch per node and
//! waits for those answers before the next batch. Under load the batches grow by themselves,
//! so an overwrite-heavy workload pays one extra request per node per batch, not per write.
//! A lost commit only keeps more until the key's next one. [`Client::close`] sends what is
//! queued before it closes the connections.
//!
//! [`Client::close`]: super::Client::close

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bunsan_protocol::message::{Request, Response, COMMIT_BATCH_MAX};
use bunsan_protocol::{RecordKey, RequestId, Version};
use tokio::sync::mpsc;

use super::background::Background;
use crate::transport::Transport;

/// One commit for one node (by transport position).
type Queued = (usize, RecordKey, Version);

/// The background sender of a client's commits, started on first use.
#[derive(Default)]
pub(super) struct Commits {
    task: Background<Queued>,
}

impl Commits {
    /// Queues a commit of `version` of `key` for each node position in `nodes`.
    pub(super) fn queue(
        &self,
        transport: &Arc<Transport>,
        timeout: Duration,
        nodes: Vec<usize>,
        key: &RecordKey,
        version: Version,
    ) {
        if nodes.is_empty() {
            return;
        }
        let start = |queued| {
            Ok::<_, std::convert::Infallible>(tokio::spawn(send_batches(
                Arc::clone(transport),
                timeout,
                queued,
            )))
        };
        let commits = nodes.into_iter().map(|node| (node, key.clone(), version));
        let _ = self.task.send(start, commits);
    }

    /// Sends everything queued, waiting at most `timeout` for it; later writes start a new
    /// sender.
    pub(super) async fn finish(&self, timeout: Duration) {
        if !self.task.finish(timeout).await {
            tracing::debug!("commits still queued at close; the nodes keep older versions");
        }
    }
}

/// Sends queued commits as one batch per node until the queue closes.
async fn send_batches(
    transport: Arc<Transport>,
    timeout: Duration,
    mut queued: mpsc::UnboundedReceiver<Queued>,
) {
    while let Some(first) = queued.recv().await {
        let mut batches: BTreeMap<usize, Vec<(RecordKey, Version)>> = BTreeMap::new();
        let mut add = |(node, key, version): Queued| {
            let batch = batches.entry(node).or_default();
            batch.push((key, version));
            batch.len() < COMMIT_BATCH_MAX
        };
        let mut room = add(first);
        while room {
            match queued.try_recv() {
                Ok(next) => room = add(next),
                Err(_) => break,
            }
        }
        let calls = batches.into_iter().map(|(node, commits)| {
            let transport = Arc::clone(&transport);
            async move {
                let request = Request::Commit {
                    request_id: RequestId::random(&mut rand::rng()),
                    commits,
                };
                match transport.call(node, &request, timeout).await {
                    Ok(Response::Committed { .. }) => {}
                    other => tracing::debug!(node, answer = ?other,
                        "a commit batch was not taken; the node keeps older versions"),
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }
}
