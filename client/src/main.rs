//! `bunsan`: the command line over the client SDK (the code lives in [`bunsan_client::cli`], so
//! other packages can embed the command unchanged).

fn main() -> std::process::ExitCode {
    bunsan_client::cli::run(std::env::args_os())
}
