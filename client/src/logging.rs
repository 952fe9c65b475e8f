//! Log output shared by Bunsan's command-line tools (`bunsan`, `bunsan-cluster`,
//! `bunsan-ssmix2`): `--log-format text|json` and the `RUST_LOG` filter, always on standard
//! error so that standard output stays the command's own output (records, tables, JSON).
//!
//! `bunsan-node` has the same flag with the same values (`bunsan_node::cli`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global log subscriber: `RUST_LOG` if set, else `default_filter` (tools use
/// `warn`, so a successful command prints only its own output). Call once, first thing.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into log files.
        .with_ansi(std::io::stderr().is_terminal());
    // `try_init`: a second call (tests, embedding) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
}
