//! `correio deliver`.
use std::process::ExitCode;

/// Arguments of `correio deliver`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `correio deliver`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`correio deliver` is not available in this build yet")
}
