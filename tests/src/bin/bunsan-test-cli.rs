//! The `bunsan` command line, built into the integration-test package so that the tests can
//! run it through `CARGO_BIN_EXE_bunsan-test-cli` (cargo only offers that for binaries of the
//! package under test).

fn main() -> std::process::ExitCode {
    bunsan_client::cli::run(std::env::args_os())
}
