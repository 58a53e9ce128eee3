//! `impair agent`: runs the HTTP agent (crate `impair-agent`) until
//! SIGTERM or SIGINT, then detaches everything it holds and exits 0.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;
use impair_agent::{Config, TlsFiles, DEFAULT_LISTEN};

use crate::usage;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Address to listen on. Anything but loopback needs --token-file or
    /// --client-ca (mutual TLS).
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// File holding the bearer token every request must carry
    /// (`Authorization: Bearer TOKEN`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Most impairments the agent holds at once.
    #[arg(long, default_value_t = impair_agent::MAX_INSTANCES)]
    pub max_instances: usize,
}

pub fn agent(a: AgentArgs) -> Result<()> {
    let mut config = Config::new(a.listen);
    config.max_instances = a.max_instances.max(1);
    if let Some(f) = &a.token_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the token file {}", f.display()))?;
        config.token = Some(text.trim().to_owned());
    }
    if let (Some(cert), Some(key)) = (a.tls_cert, a.tls_key) {
        config.tls = Some(TlsFiles {
            cert,
            key,
            client_ca: a.client_ca,
        });
    }
    config.check().map_err(|e| usage!("{e}"))?;
    impair_agent::run(config, |ready| {
        for r in &ready.removed {
            println!("removed leftover: {r}");
        }
        let scheme = if ready.tls { "https" } else { "http" };
        println!("impair agent listening on {scheme}://{}", ready.addr);
        // The line above is what scripts wait for.
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    })
}
