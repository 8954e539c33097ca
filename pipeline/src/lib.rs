//! The `herald` binary's library: configuration, wiring stages to the runner, the commands, and
//! the store adapters. `main.rs` is only the command line.

pub mod admin;
pub mod api;
pub mod app;
pub mod bench;
pub mod cache;
pub mod commands;
pub mod config;
pub mod demo;
pub mod store;
pub mod templates;
