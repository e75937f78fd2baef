//! The `anchormq` command line, as a library so that tests and the demo can call it in-process.
//!
//! One struct per subcommand, each with an `execute`; [`main_entry`] parses arguments, sets up
//! logging and turns an error into one line on stderr. What the commands do is mostly done by the
//! crates below: `anchormq-chain` (registry calls and logs), `anchormq-bridge`, `anchormq-core`
//! (notes, sealing, opening) and `anchormq-devnet` (`up`, `demo`: Anvil, the embedded broker, the built-in paper fixture).
//!
//! Exit codes: 0 success, 1 error, 2 bad usage (from clap), 3 `verify` found differences or `demo`
//! saw an outcome other than the expected one.

pub mod cli;
pub mod commands;
pub mod context;
pub mod output;

use std::process::ExitCode;

use clap::Parser;

pub use cli::Cli;

/// Exit code of a run whose checks found differences (`verify`) or unexpected outcomes (`demo`).
pub const EXIT_DIFFERENCES: u8 = 3;

/// A command finished, but what it checked did not hold.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChecksFailed(pub String);

/// Parses the arguments, runs the command on a tokio runtime and reports errors on one line.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.command.default_log_level());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.execute()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("error: {}", one_line(&report));
            if report.downcast_ref::<ChecksFailed>().is_some() {
                ExitCode::from(EXIT_DIFFERENCES)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The error and its causes on one line, skipping causes whose text the outer message already holds
/// (many library errors repeat their source in their own message).
pub fn one_line(report: &eyre::Report) -> String {
    let mut line = String::new();
    for cause in report.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text.replace('\n', " "));
    }
    line
}

fn init_tracing(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ANCHORMQ_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},rumqttc=warn,alloy=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
