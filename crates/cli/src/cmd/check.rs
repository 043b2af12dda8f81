//! `correio check`.
use std::process::ExitCode;

/// Arguments of `correio check`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `correio check`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`correio check` is not available in this build yet")
}
