//! The results: one table row per measurement, our ratio to the floors, the targets of the
//! performance issue, a JSON file and an SVG plot (hand-written: three bar panels do not need
//! a plotting library and its dependencies).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::measure::Sample;

/// One measured operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// What was measured, e.g. "1 KiB get".
    pub name: String,
    /// Record size in bytes.
    pub record_bytes: u64,
    /// Operations in flight.
    pub concurrency: usize,
    /// Operations completed.
    pub ops: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Record megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// The floor of the same operation, if measured.
    pub floor: Option<Floor>,
    /// The client's peak RSS in MiB (large records only).
    pub peak_rss_mib: Option<f64>,
    /// CPU milliseconds per operation, client and all nodes together (only when the bench
    /// started the nodes itself and can read their /proc entries).
    pub cpu_ms_per_op: Option<f64>,
}

impl Row {
    /// A row from a sample of `record_bytes`-byte operations.
    pub fn from_sample(name: &str, record_bytes: u64, concurrency: usize, s: &Sample) -> Row {
        Row {
            name: name.to_owned(),
            record_bytes,
            concurrency,
            ops: s.ops(),
            p50_ms: s.quantile_ms(0.5),
            p99_ms: s.quantile_ms(0.99),
            ops_per_s: s.ops_per_s(),
            mb_per_s: s.ops_per_s() * record_bytes as f64 / 1e6,
            floor: None,
            peak_rss_mib: None,
            cpu_ms_per_op: None,
        }
    }

    /// Our throughput as a fraction of the floor's.
    pub fn throughput_ratio(&self) -> Option<f64> {
        let floor = self.floor.as_ref()?;
        (floor.ops_per_s > 0.0).then(|| self.ops_per_s / floor.ops_per_s)
    }
}

/// The floor of one operation: the quinn round trip of the same bytes plus the sled work of
/// the n nodes for their shares, composed in series (a node receives, then writes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Floor {
    /// quinn alone: median, ms.
    pub quinn_p50_ms: f64,
    /// quinn alone: 99th percentile, ms.
    pub quinn_p99_ms: f64,
    /// quinn alone: operations per second at the same concurrency.
    pub quinn_ops_per_s: f64,
    /// sled alone: median, ms.
    pub sled_p50_ms: f64,
    /// sled alone: operations per second (batched as group commit would at this concurrency).
    pub sled_ops_per_s: f64,
    /// The floor's median, ms: quinn + sled.
    pub p50_ms: f64,
    /// The floor's 99th percentile, ms: quinn + sled.
    pub p99_ms: f64,
    /// The floor's operations per second: 1 / (1/quinn + 1/sled).
    pub ops_per_s: f64,
    /// The floor's record megabytes per second.
    pub mb_per_s: f64,
}

impl Floor {
    /// Composes the quinn and sled samples of `record_bytes`-byte operations.
    pub fn compose(quinn: &Sample, sled: &Sample, record_bytes: u64) -> Floor {
        let ops_per_s = 1.0 / (1.0 / quinn.ops_per_s() + 1.0 / sled.ops_per_s());
        Floor {
            quinn_p50_ms: quinn.quantile_ms(0.5),
            quinn_p99_ms: quinn.quantile_ms(0.99),
            quinn_ops_per_s: quinn.ops_per_s(),
            sled_p50_ms: sled.quantile_ms(0.5),
            sled_ops_per_s: sled.ops_per_s(),
            p50_ms: quinn.quantile_ms(0.5) + sled.quantile_ms(0.5),
            p99_ms: quinn.quantile_ms(0.99) + sled.quantile_ms(0.99),
            ops_per_s,
            mb_per_s: ops_per_s * record_bytes as f64 / 1e6,
        }
    }
}

/// One target of the performance issue and whether this run met it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// The target as the issue states it.
    pub target: String,
    /// What this run measured.
    pub measured: String,
    /// Whether it is met.
    pub met: bool,
}

/// The whole run, as written to JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// "quick" or "full".
    pub mode: String,
    /// Cluster shape, e.g. "3-of-5, 5 node processes on 127.0.0.1".
    pub cluster: String,
    /// Logical CPUs of the machine.
    pub cpus: usize,
    /// Unix time of the run.
    pub unix_time: u64,
    /// Every measurement.
    pub rows: Vec<Row>,
    /// The targets.
    pub targets: Vec<Target>,
}

/// The table header.
pub fn header() -> String {
    format!(
        "{:<24} {:>4} {:>7} {:>8} {:>8} {:>9} {:>8} {:>7} | {:>9} {:>10} {:>9} | {:>10}",
        "operation",
        "conc",
        "ops",
        "p50 ms",
        "p99 ms",
        "ops/s",
        "MB/s",
        "cpu ms",
        "floor p50",
        "floor op/s",
        "floor MB/s",
        "ours/floor"
    )
}

/// One table line.
pub fn line(row: &Row) -> String {
    let cpu = row
        .cpu_ms_per_op
        .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}"));
    let mut text = format!(
        "{:<24} {:>4} {:>7} {:>8.3} {:>8.3} {:>9.0} {:>8.1} {:>7} |",
        row.name,
        row.concurrency,
        row.ops,
        row.p50_ms,
        row.p99_ms,
        row.ops_per_s,
        row.mb_per_s,
        cpu
    );
    match (&row.floor, row.throughput_ratio()) {
        (Some(floor), Some(ratio)) => {
            let _ = write!(
                text,
                " {:>9.3} {:>10.0} {:>9.1} | {:>9.0}%",
                floor.p50_ms,
                floor.ops_per_s,
                floor.mb_per_s,
                ratio * 100.0
            );
        }
        _ => {
            let _ = write!(text, " {:>9} {:>10} {:>9} | {:>10}", "-", "-", "-", "-");
        }
    }
    if let Some(rss) = row.peak_rss_mib {
        let _ = write!(text, "  peak RSS {rss:.0} MiB");
    }
    text
}

/// The targets, checked against `rows`.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let find = |name: &str, concurrency: usize| {
        rows.iter()
            .find(|row| row.name == name && row.concurrency == concurrency)
    };
    let mut targets = Vec::new();
    if let Some(get) = find("1 KiB get", 1) {
        targets.push(Target {
            target: "1 KiB get p50 <= 1 ms at concurrency 1".to_owned(),
            measured: format!("{:.3} ms", get.p50_ms),
            met: get.p50_ms <= 1.0,
        });
        targets.push(Target {
            target: "1 KiB get p99 <= 5 ms at concurrency 1".to_owned(),
            measured: format!("{:.3} ms", get.p99_ms),
            met: get.p99_ms <= 5.0,
        });
    }
    if let Some(put) = find("1 KiB put", 64) {
        targets.push(Target {
            target: ">= 5,000 1 KiB puts/s at concurrency 64".to_owned(),
            measured: format!("{:.0} puts/s", put.ops_per_s),
            met: put.ops_per_s >= 5000.0,
        });
    }
    for row in rows.iter().filter(|row| row.record_bytes == 1 << 20) {
        if let Some(ratio) = row.throughput_ratio() {
            targets.push(Target {
                target: format!("{} throughput >= 70% of its floor", row.name),
                measured: format!(
                    "{:.0}% ({:.1} of {:.1} MB/s)",
                    ratio * 100.0,
                    row.mb_per_s,
                    row.floor.as_ref().map_or(0.0, |f| f.mb_per_s)
                ),
                met: ratio >= 0.7,
            });
        }
    }
    for row in rows.iter().filter(|row| row.peak_rss_mib.is_some()) {
        let rss = row.peak_rss_mib.unwrap_or(f64::MAX);
        targets.push(Target {
            target: format!("{} with client RSS < 256 MiB", row.name),
            measured: format!("{rss:.0} MiB"),
            met: rss < 256.0,
        });
    }
    targets
}

/// The plot: our throughput as a share of the floor, 1 KiB latencies and rates against their
/// targets, and the large record's client peak RSS against its budget.
pub fn svg(report: &Report) -> String {
    let ratios: Vec<Bar> = report
        .rows
        .iter()
        .filter_map(|row| {
            let ratio = row.throughput_ratio()?;
            Some(Bar {
                label: format!("{} (c={})", row.name, row.concurrency),
                value: ratio * 100.0,
                text: format!("{:.0}%", ratio * 100.0),
            })
        })
        .collect();
    let small = |concurrency: usize| {
        report
            .rows
            .iter()
            .filter(move |row| row.record_bytes == 1024 && row.concurrency == concurrency)
    };
    let latencies: Vec<Bar> = small(1)
        .flat_map(|row| {
            [("p50", row.p50_ms), ("p99", row.p99_ms)].map(|(q, ms)| Bar {
                label: format!("{} {q}", row.name),
                value: ms,
                text: format!("{ms:.2} ms"),
            })
        })
        .collect();
    let rates: Vec<Bar> = small(64)
        .flat_map(|row| {
            let floor = row.floor.as_ref().map_or(0.0, |floor| floor.ops_per_s);
            [
                Bar {
                    label: format!("{}: Bunsan", row.name),
                    value: row.ops_per_s,
                    text: format!("{:.0}/s", row.ops_per_s),
                },
                Bar {
                    label: format!("{}: floor", row.name),
                    value: floor,
                    text: format!("{floor:.0}/s"),
                },
            ]
        })
        .collect();
    let rss: Vec<Bar> = report
        .rows
        .iter()
        .filter_map(|row| {
            let mib = row.peak_rss_mib?;
            Some(Bar {
                label: row.name.clone(),
                value: mib,
                text: format!("{mib:.0} MiB"),
            })
        })
        .collect();
    let panels = [
        Panel {
            title: "Throughput as % of the floor (quinn round trip + sled, same run)",
            bars: ratios,
            lines: &[(70.0, "target 70%"), (100.0, "floor")],
        },
        Panel {
            title: "1 KiB latency at concurrency 1, ms",
            bars: latencies,
            lines: &[(1.0, "get p50 target"), (5.0, "get p99 target")],
        },
        Panel {
            title: "1 KiB operations per second at concurrency 64",
            bars: rates,
            lines: &[(5000.0, "put target 5,000/s")],
        },
        Panel {
            title: "Large record streamed by the SDK: client peak RSS, MiB",
            bars: rss,
            lines: &[(256.0, "budget 256 MiB")],
        },
    ];
    let width = 860.0;
    let row_height = 22.0;
    let mut y = 62.0;
    let mut body = String::new();
    for panel in &panels {
        y = panel.draw(&mut body, y, width, row_height);
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">\
         bunsan-bench ({mode}, {cpus} CPUs)</text>\n<text x=\"10\" y=\"42\" \
         font-size=\"11\">{cluster}</text>\n{body}</svg>\n",
        h = y + 10.0,
        mode = report.mode,
        cluster = escape(&report.cluster),
        cpus = report.cpus,
    )
}

struct Bar {
    label: String,
    value: f64,
    text: String,
}

struct Panel {
    title: &'static str,
    bars: Vec<Bar>,
    lines: &'static [(f64, &'static str)],
}

impl Panel {
    /// Draws the panel from `top`; returns where the next one starts.
    fn draw(&self, out: &mut String, top: f64, width: f64, row_height: f64) -> f64 {
        let (left, right) = (230.0, width - 90.0);
        let max = self
            .bars
            .iter()
            .map(|bar| bar.value)
            .chain(self.lines.iter().map(|(value, _)| value * 1.1))
            .fold(f64::MIN_POSITIVE, f64::max);
        let scale = |value: f64| left + (right - left) * (value / max).clamp(0.0, 1.0);
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>",
            top + 14.0,
            escape(self.title)
        );
        let mut y = top + 24.0;
        for bar in &self.bars {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
                 <rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"#4878a8\"/>\
                 <text x=\"{:.1}\" y=\"{}\">{}</text>",
                left - 6.0,
                y + 14.0,
                escape(&bar.label),
                y + 3.0,
                scale(bar.value) - left,
                row_height - 6.0,
                scale(bar.value) + 4.0,
                y + 14.0,
                escape(&bar.text)
            );
            y += row_height;
        }
        for (i, (value, label)) in self.lines.iter().enumerate() {
            let x = scale(*value);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#c03030\" \
                 stroke-dasharray=\"4 3\"/><text x=\"{x:.1}\" y=\"{}\" fill=\"#c03030\" \
                 text-anchor=\"middle\" font-size=\"10\">{}</text>",
                top + 22.0,
                y + 12.0 * i as f64,
                y + 11.0 + 12.0 * i as f64,
                escape(label)
            );
        }
        y + 14.0 + 12.0 * self.lines.len() as f64
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
