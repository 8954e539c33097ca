//! Test support for end-to-end tests: a real nats-server per test, the real `herald` binary in
//! child processes, and ways to read what happened (the tracking stream, the log channel's
//! records, queue depths).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use herald_nats::server::NatsServer;
use herald_nats::{Nats, Topology, TopologyConfig};
use herald_schemas::{Status, TrackEvent};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The `herald` binary under test: `$HERALD_BIN`, or the one cargo built next to this test.
pub fn herald_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test> → target/<profile>/herald
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    profile_dir.join("herald")
}

/// The sample templates directory.
pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/templates")
}

/// The admin token every test configures.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// One test's world: its own nats-server, its own directory for config and delivery records.
pub struct TestEnv {
    pub server: NatsServer,
    pub nats: Nats,
    pub dir: tempfile::TempDir,
    pub topology: TopologyConfig,
    pub config_path: PathBuf,
}

/// Knobs a test may turn; the rest is the shipped defaults with short timers.
#[derive(Debug, Clone)]
pub struct Options {
    pub max_deliveries: u32,
    pub ack_wait: &'static str,
    /// More `[topology]` keys, e.g. `idempotency_ttl = "2s"`.
    pub topology_extra: String,
    /// More tables after the generated ones, e.g. `[enrich]\nfanout_page = 100`.
    pub extra_config: String,
    pub url: Option<String>,
    pub replicas: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { max_deliveries: 5, ack_wait: "3s", topology_extra: String::new(), extra_config: String::new(), url: None, replicas: 1 }
    }
}

impl TestEnv {
    pub async fn start() -> anyhow::Result<Self> {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> anyhow::Result<Self> {
        let server = NatsServer::start_temp().await?;
        let url = options.url.clone().unwrap_or_else(|| server.url().to_owned());
        Self::on(server, &url, options).await
    }

    /// A test world on an already running server (or cluster, by `url`).
    pub async fn on(server: NatsServer, url: &str, options: Options) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let deliveries = dir.path().join("deliveries");
        let api_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = format!(
            r#"
[nats]
url = "{url}"

[api]
listen = "127.0.0.1:{api_port}"
url = "http://127.0.0.1:{api_port}"
admin_token = "{ADMIN_TOKEN}"

[topology]
max_deliveries = {max_deliveries}
deliver_max_deliveries = {max_deliveries}
ack_wait = "{ack_wait}"
replicas = {replicas}
{topology_extra}

[runner]
backoff_initial = "200ms"
backoff_max = "2s"
pull_expiry = "500ms"
shutdown_grace = "20s"

[deliver]
# A provider call left in `sending` by a crash is taken over after 2 × this.
send_timeout = "2s"

[deliver.log]
dir = "{deliveries}"
record_calls = true

# Several processes share this file: a test that scrapes one sets HERALD__METRICS__LISTEN.
[metrics]
listen = ""
{extra}
"#,
            max_deliveries = options.max_deliveries,
            ack_wait = options.ack_wait,
            replicas = options.replicas,
            topology_extra = options.topology_extra,
            deliveries = deliveries.display(),
            extra = options.extra_config,
        );
        let config_path = dir.path().join("herald.toml");
        std::fs::write(&config_path, config)?;
        let topology = TopologyConfig {
            max_deliveries: options.max_deliveries,
            ack_wait: humantime_parse(options.ack_wait)?,
            replicas: options.replicas,
            ..TopologyConfig::default()
        };
        let nats = Nats::connect(url, "herald-test", Topology::new(topology.clone())?).await?;
        nats.wait_for_jetstream(Duration::from_secs(30)).await?;
        Ok(TestEnv { server, nats, dir, topology, config_path })
    }

    /// A `herald` command with this test's config.
    pub fn herald(&self, args: &[&str]) -> Command {
        let mut command = Command::new(herald_bin());
        command
            .args(["--config"])
            .arg(&self.config_path)
            .args(args)
            .current_dir(self.dir.path())
            .env("HERALD_LOG", "info,async_nats=warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `herald <args>` to completion; fails with its output when it fails.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.herald(args).output().await.with_context(|| format!("cannot run {}", herald_bin().display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!("herald {args:?} failed ({}):\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
        }
        Ok(stdout)
    }

    /// Imports the sample directory (`config/directory.jsonl`: alice, bob, carol, dave, erin;
    /// groups `staff` and `beta`) into this test's store, before any process holds it.
    /// Also publishes the sample templates (`config/templates/`).
    pub async fn seed(&self) -> anyhow::Result<String> {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/directory.jsonl");
        let mut out = self.import(&sample, true).await?;
        out.push_str(&self.push_sample_templates().await?);
        Ok(out)
    }

    /// Publishes the sample templates (`config/templates/`) straight into the store.
    pub async fn push_sample_templates(&self) -> anyhow::Result<String> {
        self.run(&["templates", "push", &samples_dir().to_string_lossy(), "--offline"]).await
    }

    /// `herald directory import` of a JSONL file, offline (straight into the store) or through
    /// the running API.
    pub async fn import(&self, file: &Path, offline: bool) -> anyhow::Result<String> {
        let file = file.to_string_lossy().into_owned();
        let mut args = vec!["directory", "import", file.as_str()];
        if offline {
            args.push("--offline");
        }
        self.run(&args).await
    }

    /// Imports `users` (directory users as JSON) offline; fails when any line is rejected.
    pub async fn import_users(&self, users: &[serde_json::Value]) -> anyhow::Result<String> {
        let file = self.dir.path().join("users.jsonl");
        std::fs::write(&file, users.iter().map(|u| format!("{u}\n")).collect::<String>())?;
        let out = self.import(&file, true).await?;
        anyhow::ensure!(out.contains("; 0 lines rejected"), "the directory import refused users:\n{out}");
        Ok(out)
    }

    /// Writes the template `id` (its `template.toml`) under this test's `templates/` and
    /// publishes every template there offline.
    pub async fn push_template(&self, id: &str, toml: &str) -> anyhow::Result<String> {
        let templates = self.dir.path().join("templates");
        std::fs::create_dir_all(templates.join(id))?;
        std::fs::write(templates.join(id).join("template.toml"), toml)?;
        self.run(&["templates", "push", &templates.to_string_lossy(), "--offline"]).await
    }

    /// The admin API's base URL for `tenant`.
    pub fn api_url(&self, tenant: &str) -> anyhow::Result<String> {
        let config = std::fs::read_to_string(&self.config_path)?;
        let url = config.lines().find_map(|l| l.strip_prefix("url = \"http://")).context("api url")?.trim_end_matches('"');
        Ok(format!("http://{url}/v1/tenants/{tenant}"))
    }

    /// Calls the admin API of tenant `acme`: the status and the JSON answer (`Null` when empty).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let url = format!("{}{path}", self.api_url("acme")?);
        let mut request = reqwest::Client::new().request(method, url).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, if text.is_empty() { serde_json::Value::Null } else { serde_json::from_str(&text)? }))
    }

    /// Stores tenant `acme`'s `default` credentials for `provider` through the admin API.
    pub async fn put_provider(&self, provider: &str, credentials: &serde_json::Value) -> anyhow::Result<()> {
        let (status, answer) = self.api(reqwest::Method::PUT, &format!("/providers/{provider}/default"), Some(credentials.clone())).await?;
        ensure!(status == 200, "PUT {provider} credentials: {status} {answer}");
        Ok(())
    }

    /// Waits until the admin API answers.
    pub async fn wait_for_api(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.api(reqwest::Method::GET, "/templates", None).await.is_err() {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the admin API did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Provisions the topology with `herald provision`.
    pub async fn provision(&self) -> anyhow::Result<String> {
        self.run(&["provision"]).await
    }

    /// Starts a long-running `herald <args>` (e.g. `up`), its log in `<name>.log`.
    pub fn spawn(&self, name: &str, args: &[&str]) -> anyhow::Result<Process> {
        self.spawn_with_env(name, args, &[])
    }

    /// Like [`spawn`](Self::spawn), with extra environment variables (e.g. other credentials).
    pub fn spawn_with_env(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Process> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let mut command = self.herald(args);
        command.envs(env.iter().copied());
        let child = command.stdout(Stdio::null()).stderr(log).spawn().context("cannot start herald")?;
        Ok(Process { child, log: self.dir.path().join(format!("{name}.log")) })
    }

    pub fn deliveries_dir(&self) -> PathBuf {
        self.dir.path().join("deliveries")
    }

    /// The log channel's records: one JSON object per file.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let Ok(entries) = std::fs::read_dir(self.deliveries_dir()) else { return Vec::new() };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// How many sends of an already recorded delivery the log sink absorbed.
    pub fn absorbed_duplicates(&self) -> usize {
        std::fs::read_to_string(self.deliveries_dir().join("duplicates.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
    }

    /// Every call the `log` provider received, repeats included (`calls.jsonl`): what a real
    /// provider would have seen.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.deliveries_dir().join("calls.jsonl")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Provider calls per delivery id.
    pub fn calls_per_delivery(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for call in self.calls() {
            *counts.entry(call["delivery_id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
        counts
    }

    /// Calls beyond the first for the same delivery: sends a provider without idempotency keys
    /// would have delivered twice.
    pub fn second_calls(&self) -> usize {
        self.calls_per_delivery().values().map(|n| n - 1).sum()
    }

    /// Publishes a request body for `tenant` and waits for the stream's ack.
    pub async fn publish(&self, tenant: &str, body: impl Into<Bytes>) -> anyhow::Result<u64> {
        Ok(self.nats.publish_request(tenant, body.into(), None).await?)
    }

    /// Publishes a request body for `tenant` in ingest's `lane`; returns the notification id
    /// ingest gives it.
    pub async fn publish_in(&self, tenant: &str, lane: herald_schemas::Priority, body: impl Into<Bytes>) -> anyhow::Result<uuid::Uuid> {
        let sequence = self.nats.publish_request_in(tenant, lane, body.into(), None).await?;
        Ok(self.nats.notification_id_of(tenant, sequence).await?)
    }

    /// Every event of `tenant` the tracking stream holds now.
    pub async fn events(&self, tenant: &str) -> anyhow::Result<Vec<TrackEvent>> {
        Ok(self.nats.events_snapshot(tenant).await?)
    }

    /// Waits until `tenant` has at least `n` events with `status`; returns all its events.
    pub async fn wait_for_events(&self, tenant: &str, status: Status, n: usize, patience: Duration) -> anyhow::Result<Vec<TrackEvent>> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let events = self.events(tenant).await?;
            let have = events.iter().filter(|e| e.status == status).count();
            if have >= n {
                return Ok(events);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("waited {patience:?} for {n} `{status}` events of {tenant}, saw {have}; all: {:?}", count_statuses(&events));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every consumer has nothing pending or unacknowledged.
    pub async fn wait_idle(&self, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            // A cluster that just lost a node answers with errors until it re-elects leaders.
            let status = self.nats.status().await;
            if let Ok(status) = &status
                && status.iter().all(|c| c.pending == 0 && c.ack_pending == 0)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("pipeline not idle after {patience:?}: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the log channel holds at least `n` records.
    pub async fn wait_for_records(&self, n: usize, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        while self.records().len() < n {
            if tokio::time::Instant::now() > deadline {
                bail!("waited {patience:?} for {n} delivery records, have {}", self.records().len());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

fn humantime_parse(s: &str) -> anyhow::Result<Duration> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse()?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        other => bail!("unsupported unit {other}"),
    })
}

/// Counts events by status.
pub fn count_statuses(events: &[TrackEvent]) -> HashMap<Status, usize> {
    let mut counts = HashMap::new();
    for event in events {
        *counts.entry(event.status).or_default() += 1;
    }
    counts
}

/// A running `herald` process.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn pid(&self) -> anyhow::Result<Pid> {
        let id = self.child.id().context("process already exited")?;
        Ok(Pid::from_raw(i32::try_from(id)?))
    }

    /// SIGKILL: no chance to drain.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        kill(self.pid()?, Signal::SIGKILL)?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status's success.
    pub async fn terminate(mut self, patience: Duration) -> anyhow::Result<bool> {
        kill(self.pid()?, Signal::SIGTERM)?;
        let status = tokio::time::timeout(patience, self.child.wait()).await.context("herald did not exit after SIGTERM")??;
        Ok(status.success())
    }

    /// The process id, while it runs.
    pub fn pid_u32(&self) -> Option<u32> {
        self.child.id()
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if the process has exited.
    pub fn assert_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("herald exited early with {status}:\n{}", self.log());
        }
        Ok(())
    }
}

/// A request to one user with the sample `welcome` template.
pub fn welcome(user: &str) -> String {
    serde_json::json!({ "template": "welcome", "recipients": [{ "user_id": user }], "data": { "plan": "team" } }).to_string()
}

/// The provider sandboxes started in this process, with their CA written to a file of a
/// temporary directory (kept alive by the returned guard) for `deliver.tls.extra_ca_file`.
pub async fn sandbox_with_ca(
    options: herald_sandbox::SandboxOptions,
) -> anyhow::Result<(herald_sandbox::Sandbox, PathBuf, tempfile::TempDir)> {
    let sandbox = herald_sandbox::Sandbox::start(options).await?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, sandbox.ca_pem())?;
    Ok((sandbox, ca_file, dir))
}

/// What `providers` accepted, per target (phone number, address), in arrival order: the
/// sandboxes' own records, repeats included — how a failover test counts "once across both".
pub fn accepted_per_target(
    sandbox: &herald_sandbox::Sandbox,
    providers: &[herald_sandbox::ProviderKind],
) -> HashMap<String, Vec<herald_sandbox::ProviderKind>> {
    let mut per_target: HashMap<String, Vec<herald_sandbox::ProviderKind>> = HashMap::new();
    for r in sandbox.received().into_iter().filter(|r| r.accepted() && providers.contains(&r.provider)) {
        per_target.entry(r.target.clone()).or_default().push(r.provider);
    }
    per_target
}

/// Waits until `providers` accepted `n` calls in all; returns them per target.
pub async fn wait_accepted(
    sandbox: &herald_sandbox::Sandbox,
    providers: &[herald_sandbox::ProviderKind],
    n: usize,
    patience: Duration,
) -> anyhow::Result<HashMap<String, Vec<herald_sandbox::ProviderKind>>> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let accepted = accepted_per_target(sandbox, providers);
        if accepted.values().map(Vec::len).sum::<usize>() >= n {
            return Ok(accepted);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "only {} of {n} calls accepted: {accepted:?}", accepted.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
