//! `bunsan-node`: runs one storage node until SIGINT or SIGTERM.
//!
//! ```text
//! bunsan-node --config node.toml [--log-format text|json]
//! ```
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`). Exit code 0 after a clean
//! shutdown; 1 with a one-line reason if the configuration, identity, store or port is bad.
//! The command line itself lives in [`bunsan_node::cli`] so other binaries can embed it.

fn main() -> std::process::ExitCode {
    bunsan_node::cli::run_cli(std::env::args_os())
}
