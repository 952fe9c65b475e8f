//! Running one operation at a fixed concurrency for a time budget, and summarising latencies.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one measured cell produced.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Latency of every operation, in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// Wall time from the first operation's start to the last one's end.
    pub wall: Duration,
}

impl Sample {
    /// Operations completed.
    pub fn ops(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    /// The `q`-quantile latency (0.5 = median) in milliseconds; 0 without operations.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        // Nearest rank: the smallest latency at or above a fraction q of the operations.
        let rank = ((q * self.latencies_us.len() as f64).ceil() as usize).max(1);
        self.latencies_us[rank.min(self.latencies_us.len()) - 1] as f64 / 1000.0
    }

    /// Completed operations per second of wall time.
    pub fn ops_per_s(&self) -> f64 {
        self.ops() as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Runs `op(i)` for i = 0, 1, 2, ... with `concurrency` operations in flight until `budget`
/// has passed or `max_ops` were started, and returns every latency. The workers share one
/// task: the SDK runs each node call as its own task, so the runtime's threads still work in
/// parallel, and `op` may borrow (a client, a buffer) without `'static`.
pub async fn run<F, Fut>(
    concurrency: usize,
    budget: Duration,
    max_ops: u64,
    op: F,
) -> anyhow::Result<Sample>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let next = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + budget;
    let worker = || async {
        let mut latencies = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= max_ops || Instant::now() >= deadline {
                return Ok::<_, anyhow::Error>(latencies);
            }
            let t = Instant::now();
            op(i).await?;
            latencies.push(t.elapsed().as_micros() as u64);
        }
    };
    let results = futures_util::future::try_join_all((0..concurrency).map(|_| worker())).await?;
    let wall = started.elapsed();
    let mut latencies_us: Vec<u64> = results.into_iter().flatten().collect();
    latencies_us.sort_unstable();
    Ok(Sample { latencies_us, wall })
}

/// CPU time (user + system) used so far by this process and the processes `pids`, in
/// seconds; `None` if one of them cannot be read. Reads `/proc/PID/stat` (clock ticks of
/// 1/100 s, the value on every Linux platform this runs on).
pub fn cpu_secs(pids: &[u32]) -> Option<f64> {
    let mut ticks = 0u64;
    for path in std::iter::once("/proc/self/stat".to_owned())
        .chain(pids.iter().map(|pid| format!("/proc/{pid}/stat")))
    {
        let stat = std::fs::read_to_string(path).ok()?;
        // The command name may hold spaces; the fields after it are fixed.
        let (_, fields) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let user: u64 = fields.get(11)?.parse().ok()?;
        let system: u64 = fields.get(12)?.parse().ok()?;
        ticks += user + system;
    }
    Some(ticks as f64 / 100.0)
}

/// Peak resident set size of this process so far (`VmHWM` in /proc/self/status), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak resident set size to the current one (Linux: `5` into clear_refs), so the
/// next [`peak_rss_bytes`] covers only what follows. False where the kernel refuses.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let sample = Sample {
            latencies_us: (1..=100).map(|ms| ms * 1000).collect(),
            wall: Duration::from_secs(1),
        };
        assert_eq!(sample.quantile_ms(0.5), 50.0);
        assert_eq!(sample.quantile_ms(0.99), 99.0);
        assert_eq!(sample.quantile_ms(1.0), 100.0);
        assert_eq!(sample.ops_per_s(), 100.0);
    }

    #[tokio::test]
    async fn runs_at_most_max_ops() {
        let sample = run(4, Duration::from_secs(5), 10, |_| async { Ok(()) })
            .await
            .expect("run");
        assert_eq!(sample.ops(), 10);
    }
}
