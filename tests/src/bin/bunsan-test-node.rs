//! The `bunsan-node` daemon, built into the integration-test package so that `cargo test`
//! always builds it and the tests can find it through `CARGO_BIN_EXE_bunsan-test-node`.

fn main() -> std::process::ExitCode {
    bunsan_node::cli::run_cli(std::env::args_os())
}
