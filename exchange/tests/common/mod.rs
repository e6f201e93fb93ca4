//! Test support: an exchange served in process on 127.0.0.1:0, and a small HTTP client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use exchange::config::DspConfig;
use exchange::Config;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mockdsp::MockDspHandle;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestExchange {
    pub addr: SocketAddr,
    /// Where this node keeps its event log and spool (removed on drop unless a test chose
    /// its own paths).
    pub dir: std::path::PathBuf,
    /// The config it runs, as started (a reload test edits a copy).
    pub config: Config,
    /// Swaps a new config in, as SIGHUP does in the binary.
    pub reload: exchange::reload::ReloadHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), exchange::Error>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A config whose DSPs are the given mocks, with every other key at its default but the
/// DSP deadline: the default 30 ms is a production figure, and a test machine busy with
/// builds can take longer than that to answer on loopback. With `tmax` 200 (as
/// [`banner_request`] sends) the wait is 195 ms; tests of the deadline set their own.
pub fn config_for(dsps: &[&MockDspHandle]) -> Config {
    let mut config = Config {
        dsps: dsps
            .iter()
            .map(|d| DspConfig::new(d.name(), d.url()))
            .collect(),
        ..Config::default()
    };
    config.auction.dsp_timeout_ms = 500;
    config
}

impl TestExchange {
    pub async fn start(mut config: Config) -> TestExchange {
        // Every node gets its own event log and spool: two processes must never share one.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "exchange-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let defaults = Config::default();
        if config.tracking.spool_dir == defaults.tracking.spool_dir {
            config.tracking.spool_dir = dir.join("spool");
        }
        if config.events.file == defaults.events.file {
            config.events.file = Some(dir.join("events.jsonl"));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let (reload, reloads) = exchange::reload::reload_channel();
        let task = tokio::spawn(exchange::run_with(
            listener,
            config.clone(),
            async {
                let _ = stopped.await;
            },
            reloads,
        ));
        TestExchange {
            addr,
            config,
            reload,
            dir,
            stop: Some(stop),
            task: Some(task),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn request(&self, req: Request<Full<Bytes>>) -> Answer {
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .expect("the exchange answered within 10 s")
            .expect("the request went through");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Answer {
        let req = Request::post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .header("x-openrtb-version", "2.6")
            .body(Full::new(body.into()))
            .unwrap();
        self.request(req).await
    }

    pub async fn auction(&self, body: impl Into<Bytes>) -> Answer {
        self.post("/openrtb2/auction", body).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let req = Request::get(format!("http://{}{path}", self.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.request(req).await
    }

    /// The value of one Prometheus sample, e.g. `metric("exchange_dsp_late_answers_total",
    /// &[("dsp", "slow")])`, or 0 when it has not been recorded.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.get("/metrics").await;
        let text = String::from_utf8_lossy(&text.body).into_owned();
        sample(&text, name, labels).unwrap_or(0.0)
    }

    /// The event log's lines, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("events.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Stops the node (which flushes its event log) and returns the events it logged.
    pub async fn stop_with_events(mut self) -> Vec<serde_json::Value> {
        self.shutdown().await;
        self.events()
    }

    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the exchange shut down within 15 s")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestExchange {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sum of the samples `name{labels...} value` whose labels include all of `labels`, or
/// `None` when there is none.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (metric == name && all)
                .then(|| value.parse().ok())
                .flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A one-imp banner request.
pub fn banner_request(id: &str, floor: f64) -> String {
    serde_json::json!({
        "id": id,
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": floor}],
        "site": {"id": "s1", "domain": "news.example"},
        "tmax": 200,
        "ext": {"keep": {"me": [1, 2, 3]}}
    })
    .to_string()
}
