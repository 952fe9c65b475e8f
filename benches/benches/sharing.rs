//! Split and combine throughput: every Bunsan kernel this CPU has, against `sharks` 0.5,
//! `blahaj` 0.7 and the RNG bound (the time to draw the (k − 1)·L random bytes a split needs
//! from ChaCha12, which no correct split can beat).
//!
//! Run with `cargo bench -p bunsan-benches --bench sharing`. It prints one table; MB/s are
//! 10^6 secret bytes per second, so split and combine of the same record are comparable.
//! A plain timing loop (no harness) keeps the whole run to about two minutes: each cell runs
//! for a fixed time budget after one warm-up call and reports its best round.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bunsan_protocol::gf256::Kernel;
use bunsan_protocol::shamir;
use bunsan_protocol::{Scheme, Threshold};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Record sizes: a small record, a typical document, a large imaging file.
const SIZES: [(usize, &str); 3] = [(1 << 10, "1 KiB"), (1 << 20, "1 MiB"), (64 << 20, "64 MiB")];
/// (k, n) schemes.
const SCHEMES: [(u8, usize); 3] = [(2, 3), (3, 5), (5, 9)];
/// Above this size `sharks` and `blahaj` are not measured: they allocate one Vec per secret byte
/// (gigabytes at 64 MiB) and take tens of seconds per call; their per-byte cost does not depend
/// on the size, so their 1 MiB figure is the reference for the ratio there.
const CRATES_MAX_BYTES: usize = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kernels = Kernel::available();
    let mut rng = ChaCha12Rng::from_rng(&mut rand::rng());

    let mut header = format!("{:<7} {:<6} {:<12}", "size", "k-of-n", "op");
    for kernel in &kernels {
        header += &format!(" {:>11}", kernel.name());
    }
    header += &format!(
        " {:>8} {:>8} {:>9} {:>9} {:>11}",
        "sharks", "blahaj", "rng bound", "best/rng", "best/sharks"
    );
    println!("{header}");
    println!("{}", "-".repeat(header.len()));

    let mut remembered = Vec::new();
    for (len, size_name) in SIZES {
        for (k, n) in SCHEMES {
            let scheme = Scheme::new(k, n)?;
            let threshold = Threshold::new(k)?;
            let kn = usize::from(k);
            let mut secret = vec![0u8; len];
            rng.fill_bytes(&mut secret);
            let budget = if len < CRATES_MAX_BYTES {
                Duration::from_millis(45)
            } else {
                Duration::from_millis(150)
            };
            let crates = len <= CRATES_MAX_BYTES;
            let label = format!("{size_name:<7} {:<6}", format!("{k}-of-{n}"));

            let mut random = vec![0u8; (kn - 1) * len];
            let rng_bound = throughput(len, budget, || {
                rng.fill_bytes(&mut random);
                black_box(&random);
            });
            drop(random);

            // Split, allocating fresh shares each call (the plain API).
            let ours: Vec<f64> = kernels
                .iter()
                .map(|&kernel| {
                    throughput(len, budget, || {
                        black_box(shamir::split_with(kernel, &secret, scheme, &mut rng));
                    })
                })
                .collect();
            let sharks_split = crates.then(|| {
                throughput(len, budget, || {
                    let dealer = sharks::Sharks(k).dealer(&secret);
                    black_box(dealer.take(n).collect::<Vec<_>>());
                })
            });
            let blahaj_split = crates.then(|| {
                throughput(len, budget, || {
                    let dealer = blahaj::Sharks(k).dealer(&secret);
                    black_box(dealer.take(n).collect::<Vec<_>>());
                })
            });
            let sharks = sharks_reference_for(&mut remembered, (k, n, "split"), sharks_split);
            let row = Row {
                label: &label,
                op: "split",
                ours: &ours,
                sharks: sharks_split,
            };
            row.print(blahaj_split, Some(rng_bound), sharks);

            // Split into reused share buffers: the arithmetic without the allocator.
            let ours: Vec<f64> = kernels
                .iter()
                .map(|&kernel| {
                    let mut shares = Vec::new();
                    throughput(len, budget, || {
                        shamir::split_into(kernel, &secret, scheme, &mut rng, &mut shares);
                        black_box(&shares);
                    })
                })
                .collect();
            let row = Row {
                label: &label,
                op: "split_into",
                ours: &ours,
                sharks: None,
            };
            row.print(None, Some(rng_bound), sharks);

            // Combine from the last k shares (any k would do), returning a fresh
            // `Zeroizing<Vec<u8>>` that is dropped (and zeroed) in the timed loop.
            let shares = shamir::split(&secret, scheme, &mut rng);
            let used = &shares[n - kn..];
            let ours: Vec<f64> = kernels
                .iter()
                .map(|&kernel| {
                    throughput(len, budget, || {
                        black_box(shamir::combine_with(kernel, used, threshold).ok());
                    })
                })
                .collect();
            let (sharks_combine, blahaj_combine) = if crates {
                let theirs: Vec<sharks::Share> =
                    sharks::Sharks(k).dealer(&secret).take(kn).collect();
                let blahajs: Vec<blahaj::Share> =
                    blahaj::Sharks(k).dealer(&secret).take(kn).collect();
                (
                    Some(throughput(len, budget, || {
                        black_box(sharks::Sharks(k).recover(&theirs).ok());
                    })),
                    Some(throughput(len, budget, || {
                        black_box(blahaj::Sharks(k).recover(&blahajs).ok());
                    })),
                )
            } else {
                (None, None)
            };
            let sharks = sharks_reference_for(&mut remembered, (k, n, "combine"), sharks_combine);
            let row = Row {
                label: &label,
                op: "combine",
                ours: &ours,
                sharks: sharks_combine,
            };
            row.print(blahaj_combine, None, sharks);

            // Combine into a reused buffer.
            let ours: Vec<f64> = kernels
                .iter()
                .map(|&kernel| {
                    let mut out = Vec::new();
                    throughput(len, budget, || {
                        black_box(shamir::combine_into(kernel, used, threshold, &mut out).ok());
                    })
                })
                .collect();
            let row = Row {
                label: &label,
                op: "combine_into",
                ours: &ours,
                sharks: None,
            };
            row.print(None, None, sharks);
        }
    }
    println!("{NOTES}");
    Ok(())
}

const NOTES: &str = "
MB/s = 10^6 secret bytes per second, one thread. best = fastest Bunsan kernel in the row.
split / combine: the plain API (fresh share buffers / a fresh Zeroizing<Vec<u8>> per call,
  freed inside the timed loop). split_into / combine_into: the same work into reused buffers.
rng bound = ChaCha12 (rand_chacha) drawing the (k-1)*L random bytes a split needs, as MB/s of
  secret; best/rng = split time / rng time (1.00 would mean the arithmetic is free).
sharks / blahaj: not run at 64 MiB (\"-\"): they allocate one Vec per secret byte (gigabytes) and
  take tens of seconds; best/sharks there (\"*\") uses sharks' 1 MiB figure for the same scheme,
  which is fair because its cost per byte does not fall with size.";

/// MB/s of `op` over a record of `len` bytes: one warm-up call, then the best of [`ROUNDS`]
/// rounds, each as many calls as fit in `budget / ROUNDS` (at least one). The best round rather
/// than the mean, because the machine is shared and interference only ever slows a round down.
fn throughput(len: usize, budget: Duration, mut op: impl FnMut()) -> f64 {
    op();
    let round_budget = budget / ROUNDS;
    let mut best = 0.0f64;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut calls = 0u32;
        while calls == 0 || start.elapsed() < round_budget {
            op();
            calls += 1;
        }
        best = best.max(len as f64 * f64::from(calls) / start.elapsed().as_secs_f64() / 1e6);
    }
    best
}

/// Timed rounds per cell.
const ROUNDS: u32 = 3;

/// The sharks figure the ratio uses: measured now, or the one remembered for this scheme and
/// operation from a smaller size (flagged with `*`).
fn sharks_reference_for(
    remembered: &mut Vec<((u8, usize, &'static str), f64)>,
    key: (u8, usize, &'static str),
    measured: Option<f64>,
) -> Option<(f64, bool)> {
    match measured {
        Some(v) => {
            remembered.retain(|(k, _)| *k != key);
            remembered.push((key, v));
            Some((v, false))
        }
        None => remembered
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, v)| (v, true)),
    }
}

/// One line of the table: our kernels' MB/s for one size, scheme and operation.
struct Row<'a> {
    label: &'a str,
    op: &'a str,
    ours: &'a [f64],
    sharks: Option<f64>,
}

impl Row<'_> {
    fn print(&self, blahaj: Option<f64>, rng_bound: Option<f64>, reference: Option<(f64, bool)>) {
        let cell = |v: Option<f64>, width: usize| match v {
            Some(v) => format!(" {v:>width$.1}"),
            None => format!(" {:>width$}", "-"),
        };
        let mut line = format!("{} {:<12}", self.label, self.op);
        for &v in self.ours {
            line += &cell(Some(v), 11);
        }
        line += &cell(self.sharks, 8);
        line += &cell(blahaj, 8);
        line += &cell(rng_bound, 9);
        let best = self.ours.iter().copied().fold(0.0, f64::max);
        line += &match rng_bound {
            Some(r) => format!(" {:>9.2}", r / best),
            None => format!(" {:>9}", "-"),
        };
        line += &match reference {
            Some((r, remembered)) => {
                let ratio = format!("{:.0}x{}", best / r, if remembered { "*" } else { "" });
                format!(" {ratio:>11}")
            }
            None => format!(" {:>11}", "-"),
        };
        println!("{line}");
    }
}
