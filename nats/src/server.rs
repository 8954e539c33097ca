//! Starting a real `nats-server`: the embedded default of `herald up`, one per test, and
//! three-node clusters for cluster tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::Error;

/// The pinned server version the project installs.
pub const PINNED_VERSION: &str = "2.15.1";

/// Finds the `nats-server` binary: `$HERALD_NATS_SERVER`, then `PATH`, then where `make setup`
/// installs it (`$HOME/.cache/herald/tools/nats-server-<version>/bin`).
pub fn binary() -> Result<PathBuf, Error> {
    let mut looked = Vec::new();
    if let Some(path) = std::env::var_os("HERALD_NATS_SERVER") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        looked.push(path.display().to_string());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        looked.push("PATH".into());
    }
    if let Some(home) = std::env::var_os("HOME") {
        let candidate = Path::new(&home).join(format!(".cache/herald/tools/nats-server-{PINNED_VERSION}/bin/nats-server"));
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate.display().to_string());
    }
    Err(Error::ServerBinaryMissing { looked: looked.join(", ") })
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// JetStream store directory.
    pub store_dir: PathBuf,
    /// Client port; `None` picks a free one.
    pub port: Option<u16>,
    /// Server name (required in a cluster).
    pub name: Option<String>,
    /// Cluster: (this node's route port, every node's route port).
    pub cluster: Option<(u16, Vec<u16>)>,
    /// A server configuration file (users and permissions, limits), read before the options
    /// above, which take precedence.
    pub config_file: Option<PathBuf>,
}

/// A running `nats-server`, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    url: String,
    options: ServerOptions,
    // Keeps a temporary store alive as long as the server.
    _temp: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts a server on a free port with a temporary store (for tests).
    pub async fn start_temp() -> Result<Self, Error> {
        let temp = tempfile::tempdir().map_err(|e| Error::ServerStart { binary: PathBuf::new(), detail: e.to_string() })?;
        let options = ServerOptions { store_dir: temp.path().join("store"), port: None, name: None, cluster: None, config_file: None };
        let mut server = Self::start(options).await?;
        server._temp = Some(temp);
        Ok(server)
    }

    /// Starts a server on a free port with a temporary store and `config` (nats-server's
    /// configuration syntax, e.g. an `authorization` block with users and permissions).
    pub async fn start_temp_with_config(config: &str) -> Result<Self, Error> {
        let temp = tempfile::tempdir().map_err(|e| Error::ServerStart { binary: PathBuf::new(), detail: e.to_string() })?;
        let config_file = temp.path().join("nats-server.conf");
        std::fs::write(&config_file, config).map_err(|e| Error::ServerStart { binary: PathBuf::new(), detail: e.to_string() })?;
        let options =
            ServerOptions { store_dir: temp.path().join("store"), port: None, name: None, cluster: None, config_file: Some(config_file) };
        let mut server = Self::start(options).await?;
        server._temp = Some(temp);
        Ok(server)
    }

    /// Starts a server and waits until it accepts clients.
    pub async fn start(mut options: ServerOptions) -> Result<Self, Error> {
        let binary = binary()?;
        let start_error = |detail: String| Error::ServerStart { binary: binary.clone(), detail };
        std::fs::create_dir_all(&options.store_dir).map_err(|e| start_error(format!("store {}: {e}", options.store_dir.display())))?;
        let port = match options.port {
            Some(port) => port,
            None => free_port().map_err(|e| start_error(format!("no free port: {e}")))?,
        };
        options.port = Some(port);
        let mut command = Command::new(&binary);
        if let Some(config_file) = &options.config_file {
            command.arg("--config").arg(config_file);
        }
        command
            .arg("--jetstream")
            .arg("--store_dir")
            .arg(&options.store_dir)
            .args(["--addr", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&options.store_dir).map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            // Its own process group: a Ctrl-C meant for `herald up` must not stop the server
            // while herald is still draining and acking.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(name) = &options.name {
            command.args(["--server_name", name]);
        }
        if let Some((route_port, all)) = &options.cluster {
            let routes = all.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
            command
                .args(["--cluster_name", "herald"])
                .args(["--cluster", &format!("nats://127.0.0.1:{route_port}")])
                .args(["--routes", &routes]);
        }
        let child = command.spawn().map_err(|e| start_error(e.to_string()))?;
        let url = format!("nats://127.0.0.1:{port}");
        let mut server = NatsServer { child: Some(child), url, options, _temp: None };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let port = self.options.port.unwrap_or_default();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::ServerStart {
                    binary: binary().unwrap_or_default(),
                    detail: format!("exited with {status}; see {}", self.options.store_dir.join("nats-server.log").display()),
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::ServerStart {
                    binary: binary().unwrap_or_default(),
                    detail: format!("port {port} not open after 20 s"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Kills the server (SIGKILL) and waits for it to exit; the store stays.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same port and store, after [`kill`](Self::kill).
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.kill().await;
        let temp = self._temp.take();
        let mut again = Self::start(self.options.clone()).await?;
        self.child = again.child.take();
        self._temp = temp;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Three servers routed into one JetStream cluster, each with its own temporary store.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<NatsServer>,
    _temp: tempfile::TempDir,
}

impl Cluster {
    /// Starts a three-node cluster and returns once every node accepts clients. JetStream
    /// needs a few more moments to elect its meta leader: [`crate::connect`] callers should
    /// retry their first JetStream request.
    pub async fn start() -> Result<Self, Error> {
        let temp = tempfile::tempdir().map_err(|e| Error::ServerStart { binary: PathBuf::new(), detail: e.to_string() })?;
        let route_ports = (0..3)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::ServerStart { binary: PathBuf::new(), detail: format!("no free port: {e}") })?;
        let mut starting = Vec::new();
        for (i, route_port) in route_ports.iter().enumerate() {
            let options = ServerOptions {
                store_dir: temp.path().join(format!("node-{i}")),
                port: None,
                name: Some(format!("node-{i}")),
                cluster: Some((*route_port, route_ports.clone())),
                config_file: None,
            };
            starting.push(tokio::spawn(NatsServer::start(options)));
        }
        let mut nodes = Vec::new();
        for node in starting {
            nodes.push(node.await.map_err(|e| Error::ServerStart { binary: PathBuf::new(), detail: e.to_string() })??);
        }
        Ok(Cluster { nodes, _temp: temp })
    }

    /// A URL list naming every node, for clients that should fail over.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| n.url().to_owned()).collect::<Vec<_>>().join(",")
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn log_file(store_dir: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(store_dir.join("nats-server.log"))
}
