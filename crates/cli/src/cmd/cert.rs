//! `correio cert`.
use std::process::ExitCode;

/// Arguments of `correio cert`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `correio cert`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`correio cert` is not available in this build yet")
}
