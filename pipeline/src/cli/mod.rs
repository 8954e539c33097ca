//! The command line's commands, a module per noun: `directory`, `templates`, `caps`,
//! `providers`, `sandbox`, `webhooks`, `opt_outs`, `attachments`,
//! `send` (and `cancel`), `events` (and `status`), `serve` (`up`, `stage`, `api`, `provision`). Each takes the loaded
//! [`Config`](crate::config::Config); the ones that change the directory or templates go
//! through the admin API with [`client`].

pub mod attachments;
pub mod caps;
pub mod client;
pub mod directory;
pub mod events;
pub mod opt_outs;
pub mod providers;
pub mod sandbox;
pub mod send;
pub mod serve;
pub mod templates;
pub mod webhooks;

/// Parses a `--tenant`: it must be usable as a subject token.
pub fn parse_tenant(tenant: &str) -> Result<String, String> {
    herald_schemas::directory::check_tenant(tenant).map(|()| tenant.to_owned()).map_err(|e| e.detail)
}
