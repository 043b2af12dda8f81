//! `correio fetch`.
use std::process::ExitCode;

/// Arguments of `correio fetch`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `correio fetch`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`correio fetch` is not available in this build yet")
}
