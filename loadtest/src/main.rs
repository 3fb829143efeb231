//! `wsgate-loadtest`: parse the command line, run the scenario, print the
//! summary and the JSON line; `worker` is the re-spawned child of a
//! multi-process run. Everything else is in the library (`lib.rs`).

use std::process::ExitCode;

use clap::Parser;
use wsgate_loadtest::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let files = wsgate_loadtest::nofile::raise_to_hard();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wsgate-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::Worker) {
        return match runtime.block_on(wsgate_loadtest::workers::serve()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wsgate-loadtest worker: {e}");
                ExitCode::from(2)
            }
        };
    }
    let Some((config, out)) = cli.command.into_config(files) else {
        return ExitCode::from(2);
    };
    let report = match runtime.block_on(wsgate_loadtest::run(config)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("wsgate-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.human());
    println!("{}", report.json());
    if let Some(path) = out
        && let Err(e) = std::fs::write(&path, report.markdown())
    {
        eprintln!("wsgate-loadtest: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
