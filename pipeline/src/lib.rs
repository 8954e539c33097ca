//! The `herald` binary's library: configuration, wiring stages to the runner, the commands, the
//! demo and the benchmark. `main.rs` is only the command line. The store and the HTTP API are
//! crates of their own (`pipeline/store`, `pipeline/http`), so their boundaries are the
//! compiler's to enforce.
//!
//! Imports run one way: `cli`, `demo` and `bench` use `app`, `config`, `metrics`, `sandboxes`
//! and `template_files`; `app`, `metrics`, `sandboxes` and `template_files` use `config`;
//! `config` uses no module of this crate.

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod sandboxes;
pub mod template_files;
