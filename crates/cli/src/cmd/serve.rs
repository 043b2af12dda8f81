//! `correio serve`.
use std::process::ExitCode;

/// Arguments of `correio serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `correio serve`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`correio serve` is not available in this build yet")
}
