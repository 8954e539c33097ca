//! `docker/compose.yaml` runs the whole product: every stage of the topology has a service, each
//! Herald service's environment is a valid, self-consistent Herald configuration, and all of
//! them share one store (the SurrealDB service) and one NATS cluster. Where a Docker CLI with
//! the compose plugin is installed, `docker compose config` must accept the file too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)] // a test; figment's Jail fixes the closure's error type

use std::collections::BTreeMap;
use std::path::Path;

use clap::ValueEnum;
use herald::app::StageKind;
use herald::config::Config;
use serde_norway::Value;

fn compose() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/compose.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut value: Value = serde_norway::from_str(&text).unwrap();
    value.apply_merge().unwrap();
    // Nested merges (`environment: {<<: *herald-env, …}`) need a second pass per service.
    if let Some(services) = value.get_mut("services").and_then(Value::as_mapping_mut) {
        for (_, service) in services.iter_mut() {
            service.apply_merge().unwrap();
            if let Some(environment) = service.get_mut("environment") {
                environment.apply_merge().unwrap();
            }
        }
    }
    value
}

fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// The services built from the Herald image, with their command and environment.
fn herald_services(compose: &Value) -> BTreeMap<String, (Vec<String>, BTreeMap<String, String>)> {
    let mut found = BTreeMap::new();
    for (name, service) in compose["services"].as_mapping().unwrap() {
        if service.get("build").is_none() {
            continue;
        }
        let environment = service["environment"]
            .as_mapping()
            .map(|m| m.iter().map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().map(str::to_owned).unwrap_or_default())).collect())
            .unwrap_or_default();
        found.insert(name.as_str().unwrap().to_owned(), (strings(&service["command"]), environment));
    }
    found
}

/// Compose's `${NAME:-default}` and `${NAME:?message}`: the default, or a stand-in value.
fn interpolate(value: &str) -> String {
    let mut out = value.to_owned();
    while let Some(start) = out.find("${") {
        let end = out[start..].find('}').map(|e| start + e).unwrap();
        let inner = &out[start + 2..end];
        let replacement = match inner.split_once(":-") {
            Some((_, default)) => default.to_owned(),
            None => "set-by-the-operator".to_owned(),
        };
        out.replace_range(start..=end, &replacement);
    }
    out
}

#[test]
fn every_stage_of_the_topology_has_a_service() {
    let compose = compose();
    let services = herald_services(&compose);
    for kind in StageKind::ALL {
        let name = kind.to_possible_value().unwrap().get_name().to_owned();
        let runs_it =
            services.values().any(|(command, _)| command.first().map(String::as_str) == Some("stage") && command[1..].contains(&name));
        assert!(runs_it, "no service runs `herald stage {name}`: {services:#?}");
    }
    let commands: Vec<&str> = services.values().filter_map(|(c, _)| c.first().map(String::as_str)).collect();
    assert!(commands.contains(&"api"), "the admin API has a service");
    assert!(commands.contains(&"provision"), "provisioning runs once before the stages");
    let all = compose["services"].as_mapping().unwrap();
    for name in ["nats-1", "nats-2", "nats-3", "surrealdb"] {
        assert!(all.contains_key(name), "service {name}");
    }
    docker_compose_accepts_the_file_where_it_is_installed();
}

#[test]
fn every_service_is_a_valid_configuration_sharing_one_store_and_one_cluster() {
    let compose = compose();
    let services = herald_services(&compose);
    assert!(services.len() >= 10, "{services:#?}");
    for (name, (_, environment)) in &services {
        let mut loaded = None;
        figment::Jail::expect_with(|jail| {
            for (key, value) in environment {
                jail.set_env(key, interpolate(value));
            }
            loaded = Some(Config::load(None).map_err(|e| format!("service {name}: {e}"))?);
            Ok(())
        });
        let config = loaded.unwrap();
        assert_eq!(config.check(), Ok(()), "service {name}");
        assert_eq!(config.store.url, "ws://surrealdb:8000", "service {name} must use the shared SurrealDB server, not its own file");
        assert!(config.store.username.is_some() && config.store.password.is_some(), "service {name} signs in to the store");
        let nodes = config.nats.url.as_deref().unwrap_or_default().split(',').count();
        assert_eq!(nodes, 3, "service {name} knows every NATS node");
        assert_eq!(config.topology.replicas, 3, "service {name}: R3 streams on a three-node cluster");
    }
}

/// Where a Docker CLI with the compose plugin is installed, it must accept the file as well.
fn docker_compose_accepts_the_file_where_it_is_installed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/compose.yaml");
    let probe = std::process::Command::new("docker").args(["compose", "version"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("docker compose is not installed here; the parse checks stand in for it");
        return;
    }
    let output = std::process::Command::new("docker")
        .args(["compose", "-f"])
        .arg(&path)
        .args(["config", "--quiet"])
        .env("HERALD_ADMIN_TOKEN", "check")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
