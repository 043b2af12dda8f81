//! `correio user`.
use std::process::ExitCode;

/// Arguments of `correio user`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `correio user`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`correio user` is not available in this build yet")
}
