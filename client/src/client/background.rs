//! A task started on first use that drains an unbounded queue until the queue closes: the
//! shape shared by the client's commit sender and its put batcher.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The queue of a background task and the task, once started.
pub(super) struct Background<T> {
    running: Mutex<Option<Running<T>>>,
}

struct Running<T> {
    queue: mpsc::UnboundedSender<T>,
    task: JoinHandle<()>,
}

impl<T> Default for Background<T> {
    fn default() -> Self {
        Self {
            running: Mutex::new(None),
        }
    }
}

impl<T> Background<T> {
    /// Queues `items`; if no task runs, first starts one with `start`, which is handed the
    /// queue's receiving end (and whose error is returned, nothing queued).
    pub(super) fn send<E>(
        &self,
        start: impl FnOnce(mpsc::UnboundedReceiver<T>) -> Result<JoinHandle<()>, E>,
        items: impl IntoIterator<Item = T>,
    ) -> Result<(), E> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.is_none() {
            let (queue, queued) = mpsc::unbounded_channel();
            *running = Some(Running {
                queue,
                task: start(queued)?,
            });
        }
        if let Some(running) = running.as_ref() {
            for item in items {
                // The task ends only once the queue's sender is dropped, so this cannot fail.
                let _ = running.queue.send(item);
            }
        }
        Ok(())
    }

    /// Closes the queue and waits at most `timeout` for the task to finish what it holds;
    /// false if it did not in time. A later [`Background::send`] starts a new task.
    pub(super) async fn finish(&self, timeout: Duration) -> bool {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match running {
            Some(Running { queue, task }) => {
                drop(queue);
                tokio::time::timeout(timeout, task).await.is_ok()
            }
            None => true,
        }
    }
}
