//! The `wsgate` binary: everything is in the library; see `src/lib.rs`.
fn main() -> std::process::ExitCode {
    wsgate::cli::main()
}
