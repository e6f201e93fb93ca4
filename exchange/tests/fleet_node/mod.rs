//! One real `exchange` process of a test fleet: its config file, event log, spool and logs in
//! its own directory, its address read from its stdout, HTTP calls to it, and a guard that
//! kills it when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use super::common::{sample, Answer};

pub const ADMIN_TOKEN: &str = "fleet-admin-token-0123456789";
pub const SECRET: &str = "fleet-tracking-secret-0123456789";

/// How long a node may take to print its address: a 2-core machine busy with builds and the
/// other tests' clusters can take seconds to start a process that connects to a cluster.
const START_LIMIT: Duration = Duration::from_secs(60);
/// One HTTP call, answered or failed.
const CALL_LIMIT: Duration = Duration::from_secs(20);

/// What differs between the nodes of a test.
#[derive(Clone)]
pub struct NodeSettings {
    pub name: String,
    pub seeds: Vec<String>,
    pub dsp_name: String,
    pub dsp_url: String,
    /// `(cid, budget in currency units)`.
    pub campaigns: Vec<(String, f64)>,
    pub sync_ms: u64,
    pub node_ttl_ms: u64,
    /// `[budget]` and `[tracking]` keys of reconciliation, written as given (TOML lines).
    pub extra_budget: String,
    pub extra_tracking: String,
}

pub struct Node {
    child: std::sync::Mutex<Option<Child>>,
    pub addr: String,
    pub dir: PathBuf,
    client: Client<HttpConnector, Full<Bytes>>,
}

fn config_toml(s: &NodeSettings, dir: &Path) -> String {
    let seeds: Vec<String> = s.seeds.iter().map(|u| format!("{u:?}")).collect();
    let mut toml = format!(
        r#"
[auction]
dsp_timeout_ms = 500

[[dsp]]
name = "{dsp}"
url = "{url}"

[redis]
cluster = [{seeds}]

[budget]
sync_interval_ms = {sync}
full_sync_ms = {full}
min_lease_micros = 10000
redis_timeout_ms = 300
node_ttl_ms = {ttl}
node_id = "{name}"
{extra_budget}

[admin]
token = "{token}"

[overload]
enabled = false

[tracking]
secret = "{secret}"
spool_dir = "{spool}"
replay_interval_ms = 100
redis_timeout_ms = 300
{extra_tracking}

[events]
file = "{events}"
redis_stream = "events"
fsync_interval_ms = 20
"#,
        dsp = s.dsp_name,
        url = s.dsp_url,
        seeds = seeds.join(", "),
        sync = s.sync_ms,
        full = s.sync_ms * 4,
        ttl = s.node_ttl_ms,
        name = s.name,
        extra_budget = s.extra_budget,
        token = ADMIN_TOKEN,
        secret = SECRET,
        spool = dir.join("spool").display(),
        extra_tracking = s.extra_tracking,
        events = dir.join("events.jsonl").display(),
    );
    for (cid, budget) in &s.campaigns {
        toml.push_str(&format!(
            "\n[[campaign]]\ndsp = \"{}\"\nid = \"{cid}\"\nbudget = {budget:?}\n",
            s.dsp_name
        ));
    }
    toml
}

impl Node {
    /// Starts the `exchange` binary on `127.0.0.1:0` with a config written from `settings`
    /// and waits for the address it prints. Its stdout and stderr go to files in its
    /// directory (kept when a test fails, for the logs).
    pub async fn start(settings: &NodeSettings) -> Node {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "exchange-fleet-{}-{}-{}",
            std::process::id(),
            settings.name,
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("exchange.toml");
        std::fs::write(&config, config_toml(settings, &dir)).unwrap();
        let stdout = dir.join("stdout.log");
        let child = Command::new(env!("CARGO_BIN_EXE_exchange"))
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(&dir)
            .env_remove("EXCHANGE_REDIS_URL")
            .env_remove("EXCHANGE_REDIS_CLUSTER")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let mut node = Node {
            child: std::sync::Mutex::new(Some(child)),
            addr: String::new(),
            dir,
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build_http(),
        };
        let mut addr = None;
        let printed = testkit::eventually(START_LIMIT, || {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            addr = text
                .lines()
                .find_map(|l| l.split("listening on http://").nth(1))
                .map(str::to_owned);
            let exited = node
                .child
                .lock()
                .unwrap()
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            assert!(
                !exited,
                "{} exited at start:\n{}",
                settings.name,
                node.logs()
            );
            std::future::ready(addr.is_some())
        })
        .await;
        assert!(
            printed,
            "{} printed no address within {START_LIMIT:?}:\n{}",
            settings.name,
            node.logs()
        );
        node.addr = addr.unwrap();
        node
    }

    /// The node's stderr (its log), for failure messages.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no lease handed back, no last report.
    pub fn kill(&self) {
        let taken = self.child.lock().map(|mut c| c.take());
        if let Ok(Some(mut child)) = taken {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub async fn request(&self, req: Request<Full<Bytes>>) -> Answer {
        self.try_request(req)
            .await
            .unwrap_or_else(|e| panic!("calling {}: {e}", self.addr))
    }

    /// The answer, or why there was none (a killed node refuses the connection).
    pub async fn try_request(&self, req: Request<Full<Bytes>>) -> Result<Answer, String> {
        let response = tokio::time::timeout(CALL_LIMIT, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {CALL_LIMIT:?}"))?
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub async fn try_auction(&self, body: String) -> Result<Answer, String> {
        let req = Request::post(format!("http://{}/openrtb2/auction", self.addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.try_request(req).await
    }

    pub async fn get(&self, path_and_query: &str) -> Answer {
        let req = Request::get(format!("http://{}{path_and_query}", self.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.request(req).await
    }

    /// `GET /admin/campaigns/{dsp}/{cid}`; `None` while the store cannot answer (a failover).
    pub async fn campaign(&self, dsp: &str, cid: &str) -> Option<serde_json::Value> {
        let req = Request::get(format!("http://{}/admin/campaigns/{dsp}/{cid}", self.addr))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = self.request(req).await;
        (answer.status == StatusCode::OK).then(|| answer.json())
    }

    /// The sum of the `/metrics` samples `name{...}` whose labels include `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let text = self.get("/metrics").await;
        let text = String::from_utf8_lossy(&text.body).into_owned();
        // Counters: whole numbers, so the cast loses nothing.
        sample(&text, name, labels).unwrap_or(0.0) as u64
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
