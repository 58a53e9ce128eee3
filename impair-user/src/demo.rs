//! `impair demo`: the main job on the embedded default.
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Probe packets to send through the impaired router.
    #[arg(long, default_value_t = 20_000)]
    pub count: u64,
}

pub fn run(_a: &DemoArgs) -> Result<()> {
    anyhow::bail!("demo: not wired yet")
}
