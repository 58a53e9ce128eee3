//! impair's agent: a long-running daemon that owns the impairments on its
//! host and takes them over HTTP/JSON, for test suites and fleets.
//!
//! - `request.rs`: the API's bodies and their conversion to the domain
//!   model (never the command line's types);
//! - `registry.rs`: the instances, one engine each (create, update, delete);
//! - `http.rs`: routes, authentication, errors as JSON;
//! - `chaosd.rs`: Chaos Mesh's chaosd network attack endpoints;
//! - `tls.rs`: rustls (ring), mutual TLS;
//! - `cleanup.rs`: what a dead agent left, removed at start;
//! - `container.rs`: a container's network namespace, from its runtime.
//!
//! Safety: loopback by default; any other address needs a bearer token or
//! client certificates. The engines die with the agent (tcx links close
//! with its descriptors, clsact filters stop at the end of their lease);
//! SIGTERM and SIGINT detach everything and return.
pub mod chaosd;
pub mod cleanup;
pub mod container;
pub mod error;
pub mod http;
pub mod link;
pub mod registry;
pub mod request;
pub mod rule_json;
pub mod tls;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context as _, Result};

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7467";
/// The largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The most impairments one agent holds.
pub const MAX_INSTANCES: usize = 64;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, every client must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The bearer token (read from `--token-file`).
    pub token: Option<String>,
    pub tls: Option<TlsFiles>,
    pub max_instances: usize,
    pub max_body_bytes: usize,
}

/// Why the agent will not start with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{0} is not a loopback address: the agent needs a bearer token or client certificates (a \
         client CA with TLS) to listen there"
    )]
    Unauthenticated(SocketAddr),
    #[error("a client CA needs the server's TLS certificate and key")]
    CaWithoutTls,
    #[error("the token file is empty")]
    EmptyToken,
}

impl Config {
    pub fn new(listen: SocketAddr) -> Self {
        Config {
            listen,
            token: None,
            tls: None,
            max_instances: MAX_INSTANCES,
            max_body_bytes: MAX_BODY_BYTES,
        }
    }

    /// Refuses a non-loopback address without a token or mutual TLS.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken);
        }
        let mtls = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if !self.listen.ip().is_loopback() && self.token.is_none() && !mtls {
            return Err(ConfigError::Unauthenticated(self.listen));
        }
        Ok(())
    }
}

/// What the agent reports once it listens.
#[derive(Debug, Clone)]
pub struct Ready {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Leftovers of dead agents (or controllers) removed at start.
    pub removed: Vec<String>,
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// Runs the agent until SIGTERM or SIGINT; then detaches every impairment
/// and returns. `on_ready` is called once the socket listens.
pub fn run(config: Config, on_ready: impl FnOnce(&Ready)) -> Result<()> {
    config.check()?;
    if let Some(t) = &config.tls {
        if t.client_ca.is_some() && t.cert.as_os_str().is_empty() {
            return Err(ConfigError::CaWithoutTls.into());
        }
    }
    let tls = config
        .tls
        .as_ref()
        .map(|t| tls::server_config(&t.cert, &t.key, t.client_ca.as_deref()))
        .transpose()?;
    let removed = cleanup::remove_leftovers().context("removing what a dead agent left")?;
    for r in &removed {
        tracing::warn!("removed a leftover: {r}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let registry = Arc::new(registry::Registry::new(config.max_instances));
    let state = Arc::new(http::AppState {
        registry: Arc::clone(&registry),
        token: config.token.clone(),
        removed_at_start: removed.clone(),
        started_unix_ns: impair::sys::unix_ns(),
    });
    let app = http::router(state, config.max_body_bytes);
    let result = runtime.block_on(async {
        let tcp = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = tcp.local_addr()?;
        on_ready(&Ready {
            addr,
            tls: tls.is_some(),
            removed,
        });
        let ticker = {
            let reg = Arc::clone(&registry);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(registry::TICK);
                loop {
                    every.tick().await;
                    let reg = Arc::clone(&reg);
                    let _ = tokio::task::spawn_blocking(move || reg.tick()).await;
                }
            })
        };
        let served = match tls {
            Some(cfg) => {
                let listener = tls::TlsListener::new(tcp, cfg)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop_signal())
                    .await
            }
            None => {
                axum::serve(tcp, app)
                    .with_graceful_shutdown(stop_signal())
                    .await
            }
        };
        ticker.abort();
        served.context("serving")
    });
    // Detach everything, whatever ended the server.
    let reg = Arc::clone(&registry);
    let failed = runtime.block_on(async move {
        tokio::task::spawn_blocking(move || reg.shutdown())
            .await
            .unwrap_or(1)
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result?;
    if failed > 0 {
        anyhow::bail!("{failed} impairments could not be detached cleanly");
    }
    Ok(())
}
