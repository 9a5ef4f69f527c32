//! `hostkit tun demo`.

use crate::Outcome;
use crate::printer::Printer;

/// Options of `hostkit tun demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs `hostkit tun demo`.
pub fn run(_args: DemoArgs, _printer: &Printer) -> anyhow::Result<Outcome> {
    anyhow::bail!("not yet")
}
