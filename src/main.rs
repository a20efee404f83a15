//! The `tmpvault` binary: everything lives in the library (see `lib.rs`).

fn main() -> std::process::ExitCode {
    tmpvault::cli::main()
}
