//! A fleet of real `exchange` processes on a real local Redis Cluster, in front of one mock
//! DSP: under concurrent load spread over the nodes no campaign spends past its budget and
//! every impression, fired at one node and again at another, is billed exactly once; the
//! same holds across a master killed during the load; and a node SIGKILLed during the load
//! has its leases back within `node_ttl_ms` plus one sync interval, with reconciliation then
//! crediting back nothing that was rendered.

// Tests fail loudly: unwrap and expect are the assertion here (`clippy.toml` allows them in
// `#[test]` functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod fleet_node;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_node::{Node, NodeSettings};
use futures::StreamExt;
use http::StatusCode;
use impressions::{EventType, RedisConn, Target};
use mockdsp::{MockDsp, MockDspHandle, Price};
use testkit::{eventually, RedisCluster};

const DSP: &str = "fleet-dsp";
const CIDS: [&str; 3] = ["c1", "c2", "c3"];
/// Bids are 2.00 CPM over a 1.99 floor: each impression clears at 2.00 CPM, 2 000 micros.
const COST: u64 = 2_000;
const SYNC_MS: u64 = 25;
const IN_FLIGHT: usize = 32;
/// How long a condition that depends on background rounds (syncs, replays, stream writes)
/// gets: seconds at worst on a loaded 2-core machine; every wait ends as soon as it holds.
const PATIENCE: Duration = Duration::from_secs(20);
const CALL: Duration = Duration::from_secs(2);

async fn bidder() -> MockDspHandle {
    MockDsp::builder(DSP)
        .price(Price::Fixed(2.0))
        .cids(CIDS)
        .notices(true)
        .start()
        .await
        .unwrap()
}

fn settings(cluster: &RedisCluster, dsp: &MockDspHandle, budget: f64, name: &str) -> NodeSettings {
    NodeSettings {
        name: name.to_owned(),
        seeds: cluster.seeds(),
        dsp_name: DSP.to_owned(),
        dsp_url: dsp.url().to_owned(),
        campaigns: CIDS.iter().map(|c| ((*c).to_owned(), budget)).collect(),
        sync_ms: SYNC_MS,
        // Well above a loaded test machine's stalls: these tests are about load and failover,
        // and a live node declared dead would start a fresh session mid-count. The node-death
        // test sets its own, short TTL for the node it kills.
        node_ttl_ms: 3_000,
        extra_budget: String::new(),
        extra_tracking: String::new(),
    }
}

async fn start_all(all: &[NodeSettings]) -> Vec<Arc<Node>> {
    futures::future::join_all(all.iter().map(Node::start))
        .await
        .into_iter()
        .map(Arc::new)
        .collect()
}

fn request(id: &str) -> String {
    serde_json::json!({
        "id": id,
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 1.99}],
        "site": {"id": "s1", "domain": "news.example", "publisher": {"id": "pub-1"}},
        "tmax": 200
    })
    .to_string()
}

/// A won auction: its campaign, the node that ran it, and the path and query of its `burl`
/// (the exchange's signed impression URL).
#[derive(Clone, Debug)]
struct Win {
    auction: String,
    cid: String,
    node: usize,
    burl: String,
}

/// What a load run saw.
#[derive(Default)]
struct Tally {
    wins: Vec<Win>,
    no_bids: usize,
    /// Calls to a node killed by the test that got no answer.
    refused: usize,
}

impl Tally {
    fn won_micros(&self) -> BTreeMap<String, u64> {
        let mut by = BTreeMap::new();
        for w in &self.wins {
            *by.entry(w.cid.clone()).or_default() += COST;
        }
        by
    }
}

/// Runs `total` auctions, `IN_FLIGHT` at once, auction `i` on node `i % nodes.len()`. A node
/// in `killed` may fail to answer (it is SIGKILLed during the run); any other failure fails
/// the test. With `fire`, each win's impression is fired at the next node and again at the
/// one after, as soon as it is won.
async fn load(
    tag: &str,
    nodes: &[Arc<Node>],
    total: usize,
    done: &AtomicUsize,
    killed: &Mutex<Vec<usize>>,
    fire: bool,
) -> Tally {
    let tally = Mutex::new(Tally::default());
    futures::stream::iter(0..total)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let (tally, node) = (&tally, i % nodes.len());
            async move {
                let auction = format!("{tag}-{i}");
                let answer = nodes[node].try_auction(request(&auction)).await;
                done.fetch_add(1, Ordering::Relaxed);
                let answer = match answer {
                    Ok(a) => a,
                    Err(e) => {
                        assert!(
                            killed.lock().unwrap().contains(&node),
                            "node {node} failed {auction}: {e}"
                        );
                        tally.lock().unwrap().refused += 1;
                        return;
                    }
                };
                if answer.status == StatusCode::NO_CONTENT {
                    tally.lock().unwrap().no_bids += 1;
                    return;
                }
                assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
                let bid = answer.json()["seatbid"][0]["bid"][0].clone();
                let burl = bid["burl"].as_str().unwrap();
                let win = Win {
                    auction,
                    cid: bid["cid"].as_str().unwrap().to_owned(),
                    node,
                    burl: burl[burl.find("/event/imp").unwrap()..].to_owned(),
                };
                if fire {
                    for k in [1, 2] {
                        let at = &nodes[(node + k) % nodes.len()];
                        let hit = at.get(&win.burl).await;
                        assert_eq!(hit.status, StatusCode::NO_CONTENT, "{:?}", hit.body);
                    }
                }
                tally.lock().unwrap().wins.push(win);
            }
        })
        .await;
    tally.into_inner().unwrap()
}

/// Fires each impression at `first` and then at `second`; both answer 204 (billed,
/// duplicate, or spooled for replay).
async fn fire_twice(wins: &[Win], first: &Node, second: &Node) {
    futures::stream::iter(wins)
        .for_each_concurrent(IN_FLIGHT, |w| async move {
            for node in [first, second] {
                let hit = node.get(&w.burl).await;
                assert_eq!(hit.status, StatusCode::NO_CONTENT, "{:?}", hit.body);
            }
        })
        .await;
}

/// `(impression, duplicate_impression)` events per auction id.
type Sightings = HashMap<String, (u64, u64)>;

fn count(events: impl IntoIterator<Item = (EventType, String)>) -> Sightings {
    let mut seen = Sightings::new();
    for (kind, auction) in events {
        match kind {
            EventType::Impression => seen.entry(auction).or_default().0 += 1,
            EventType::DuplicateImpression => seen.entry(auction).or_default().1 += 1,
            _ => {}
        }
    }
    seen
}

/// Every node's event stream, read from the cluster.
async fn streams(conn: &RedisConn) -> Sightings {
    match impressions::read_streams(conn, "events", CALL).await {
        Ok(events) => count(events.into_iter().map(|e| (e.kind, e.auction_id))),
        Err(_) => Sightings::new(),
    }
}

/// Every node's event log file.
fn files(nodes: &[Arc<Node>]) -> Sightings {
    count(nodes.iter().flat_map(|n| {
        let text = std::fs::read_to_string(n.dir.join("events.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<impressions::Event>(l).ok())
            .map(|e| (e.kind, e.auction_id))
            .collect::<Vec<_>>()
    }))
}

/// Each won auction seen billed exactly once and as a duplicate exactly once, nothing else.
fn once_each(seen: &Sightings, wins: &[Win]) -> bool {
    seen.len() == wins.len() && wins.iter().all(|w| seen.get(&w.auction) == Some(&(1, 1)))
}

async fn sum_metric(nodes: &[Arc<Node>], name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut sum = 0;
    for node in nodes {
        sum += node.metric(name, labels).await;
    }
    sum
}

/// Waits until every node has reported all it charged, then checks the store holds exactly
/// what the fleet won per campaign, within the budget.
async fn spend_matches(nodes: &[Arc<Node>], won: &BTreeMap<String, u64>, budget: u64) {
    for cid in CIDS {
        let want = won.get(cid).copied().unwrap_or(0);
        assert!(want <= budget, "{cid}: won {want} of {budget}");
        let last = Mutex::new(None);
        let reported = eventually(PATIENCE, || {
            let last = &last;
            async move {
                let mut all = true;
                let mut charged = 0;
                for node in nodes {
                    let Some(state) = node.campaign(DSP, cid).await else {
                        return false;
                    };
                    all &= state["this_node"]["unreported_micros"] == 0;
                    charged += state["this_node"]["charged_micros"].as_u64().unwrap();
                    let (spent, held) = (
                        state["spent_micros"].as_u64().unwrap(),
                        state["held_micros"].as_u64().unwrap(),
                    );
                    assert!(spent + held <= budget, "{cid}: {state}");
                    *last.lock().unwrap() = Some(state);
                }
                let spent = last.lock().unwrap().as_ref().unwrap()["spent_micros"].as_u64();
                all && charged == want && spent == Some(want)
            }
        })
        .await;
        assert!(
            reported,
            "{cid}: the store's spend never matched the {want} micros won: {:?}",
            last.lock().unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_over_three_nodes_never_overspends_and_bills_each_impression_once() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 0).expect("start a redis cluster");
    let dsp = bidder().await;
    // 0.10 per campaign: 50 impressions each, 150 in all, for 480 auctions.
    let budget = 100_000;
    let all: Vec<NodeSettings> = (0..3)
        .map(|n| settings(&cluster, &dsp, 0.10, &format!("load{n}")))
        .collect();
    let nodes = start_all(&all).await;
    let conn = redislink::open(&Target::Cluster(cluster.seeds()), CALL).unwrap();

    let done = AtomicUsize::new(0);
    let tally = load("ld", &nodes, 480, &done, &Mutex::new(Vec::new()), false).await;
    let wins = &tally.wins;
    let won = tally.won_micros();
    eprintln!(
        "load: {} won, {} without a win, per campaign {won:?}",
        wins.len(),
        tally.no_bids
    );
    assert!(!wins.is_empty());
    spend_matches(&nodes, &won, budget).await;
    // Demand was three times the budget: the budgets were used, not stranded (a remnant
    // below one impression may stay leased on each node).
    for cid in CIDS {
        let got = won.get(cid).copied().unwrap_or(0);
        assert!(got + 3 * COST > budget, "{cid}: only {got} of {budget} won");
    }

    // Every impression fired at one node and again at another.
    futures::stream::iter(wins)
        .for_each_concurrent(IN_FLIGHT, |w| {
            let nodes = &nodes;
            async move {
                for k in [1, 2] {
                    let hit = nodes[(w.node + k) % 3].get(&w.burl).await;
                    assert_eq!(hit.status, StatusCode::NO_CONTENT, "{:?}", hit.body);
                }
            }
        })
        .await;
    let n = wins.len() as u64;
    let imp = |result| [("kind", "imp"), ("result", result)];
    // Each hit answered as billed or as a duplicate (or, if Redis was slow to answer, spooled
    // and replayed through the same claim: the streams below count the outcome).
    let billed = sum_metric(&nodes, "exchange_tracking_events_total", &imp("billed")).await;
    let duplicate = sum_metric(&nodes, "exchange_tracking_events_total", &imp("duplicate")).await;
    let spooled = sum_metric(&nodes, "exchange_tracking_events_total", &imp("spooled")).await;
    assert!(
        billed <= n && duplicate <= n,
        "{billed} billed, {duplicate} duplicates of {n}"
    );
    assert_eq!(billed + duplicate + spooled, 2 * n);
    eprintln!("hits: {billed} billed, {duplicate} duplicate, {spooled} spooled");
    let seen = Mutex::new(Sightings::new());
    let in_streams = eventually(PATIENCE, || {
        let (seen, conn) = (&seen, &conn);
        async move {
            let now = streams(conn).await;
            let done = once_each(&now, wins);
            *seen.lock().unwrap() = now;
            done
        }
    })
    .await;
    assert!(
        in_streams,
        "the event streams hold {} auctions, want each of {n} once billed and once a duplicate",
        seen.lock().unwrap().len()
    );
    // The DSP's own burl is fired once per billed impression.
    let notified = eventually(PATIENCE, || std::future::ready(dsp.stats().burl_hits == n)).await;
    assert!(
        notified,
        "burl hits {} for {n} impressions",
        dsp.stats().burl_hits
    );
    eprintln!("fleet load test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_during_the_load_breaks_neither_budgets_nor_billing() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1).expect("start a redis cluster");
    // A replica promoted before its first sync holds nothing and the fleet would (rightly)
    // fence the store: this test is about a failover to a synced replica.
    cluster.wait_replicas_synced().unwrap();
    let dsp = bidder().await;
    // 0.20 per campaign: 300 impressions in all, so wins go on through the failover.
    let budget = 200_000;
    // The presence outlives a failover (1 s node timeout plus the election), as
    // `node_ttl_ms` must on a cluster: no live node is declared dead meanwhile.
    let all: Vec<NodeSettings> = (0..3)
        .map(|n| NodeSettings {
            node_ttl_ms: 5_000,
            ..settings(&cluster, &dsp, 0.20, &format!("fo{n}"))
        })
        .collect();
    let nodes = start_all(&all).await;
    let conn = redislink::open(&Target::Cluster(cluster.seeds()), CALL).unwrap();

    let done = AtomicUsize::new(0);
    let no_kill = Mutex::new(Vec::new());
    let running = load("fo", &nodes, 600, &done, &no_kill, true);
    let kill =
        async {
            let some = eventually(PATIENCE, || {
                std::future::ready(done.load(Ordering::Relaxed) >= 120)
            })
            .await;
            assert!(some, "the load never got going");
            let victim = cluster.master_ports()[0];
            cluster.kill(victim);
            let killed_at = Instant::now();
            // Polled without blocking the task: the load runs beside this on the same task.
            let promoted = eventually(PATIENCE, || {
                std::future::ready(cluster.master_ports().len() == 3)
            })
            .await;
            assert!(promoted, "no replica took over from {victim}");
            let ok =
                eventually(PATIENCE, || {
                    std::future::ready(cluster.nodes().iter().filter(|n| n.pid().is_some()).all(
                        |n| {
                            cluster
                                .info(n.port())
                                .is_some_and(|i| i.contains("cluster_state:ok"))
                        },
                    ))
                })
                .await;
            assert!(
                ok,
                "the cluster never reached cluster_state:ok after the failover"
            );
            eprintln!(
                "failover: {:?} from the kill to cluster_state:ok, {} auctions done by then",
                killed_at.elapsed(),
                done.load(Ordering::Relaxed)
            );
        };
    let (mut tally, ()) = tokio::join!(running, kill);
    // And on after the failover, until the budgets are spent.
    let after = load("fo-after", &nodes, 150, &done, &no_kill, true).await;
    eprintln!(
        "failover load: {} won during, {} after, {} + {} without a win",
        tally.wins.len(),
        after.wins.len(),
        tally.no_bids,
        after.no_bids
    );
    tally.wins.extend(after.wins);
    let wins = &tally.wins;
    let won = tally.won_micros();
    spend_matches(&nodes, &won, budget).await;

    // Impressions fired during the failover were spooled: once every spool has replayed,
    // every impression is billed exactly once and seen once as a duplicate, in the logs.
    let n = wins.len() as u64;
    let mut seen = Sightings::new();
    let billed = eventually(PATIENCE, || {
        seen = files(&nodes);
        std::future::ready(once_each(&seen, wins))
    })
    .await;
    let spooled = sum_metric(
        &nodes,
        "exchange_tracking_events_total",
        &[("kind", "imp"), ("result", "spooled")],
    )
    .await;
    assert!(
        billed,
        "event logs: {} auctions, {} not seen exactly once billed and once duplicate ({spooled} hits spooled)",
        seen.len(),
        wins.iter().filter(|w| seen.get(&w.auction) != Some(&(1, 1))).count()
    );
    // The streams mirror the logs exactly once through the failover: a batch that met the
    // dead master waits in its node's backlog and is resent with the same entry ids.
    let seen_in_streams = Mutex::new(Sightings::new());
    let mirrored = eventually(PATIENCE, || {
        let (seen, conn) = (&seen_in_streams, &conn);
        async move {
            let now = streams(conn).await;
            let done = once_each(&now, wins);
            *seen.lock().unwrap() = now;
            done
        }
    })
    .await;
    let in_streams = seen_in_streams.into_inner().unwrap();
    let dropped = sum_metric(&nodes, "impressions_stream_dropped_total", &[]).await;
    assert!(
        mirrored,
        "streams: {} auctions, {} not seen exactly once billed and once duplicate",
        in_streams.len(),
        wins.iter()
            .filter(|w| in_streams.get(&w.auction) != Some(&(1, 1)))
            .count()
    );
    assert_eq!(dropped, 0, "stream events dropped");
    let notified = eventually(PATIENCE, || std::future::ready(dsp.stats().burl_hits == n)).await;
    assert!(
        notified,
        "burl hits {} for {n} impressions",
        dsp.stats().burl_hits
    );
    eprintln!(
        "failover test: {spooled} hits spooled, {dropped} stream writes dropped, took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_the_load_has_its_leases_back_and_settles_without_over_crediting() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 0).expect("start a redis cluster");
    let dsp = bidder().await;
    const VICTIM_TTL_MS: u64 = 400;
    // Reconciliation in seconds instead of hours: URLs valid 3 s, buckets of 500 ms settled
    // 3.3 s after they end (the least the config allows for that window).
    let reconcile = |mut s: NodeSettings| {
        s.extra_budget = "reconcile_bucket_ms = 500\nreconcile_interval_ms = 100\n\
                          settle_after_ms = 3300\n"
            .into();
        s.extra_tracking = "window_ms = 3000\nmax_skew_ms = 100\nreplay_horizon_ms = 200\n".into();
        s
    };
    // The victim's presence is the one under test; the live nodes' lasts longer, so a live
    // node starved of CPU on a busy machine is not declared dead too.
    let all: Vec<NodeSettings> = (0..3)
        .map(|n| {
            reconcile(NodeSettings {
                node_ttl_ms: if n == 2 { VICTIM_TTL_MS } else { 1_500 },
                ..settings(&cluster, &dsp, 5.0, &format!("rc{n}"))
            })
        })
        .collect();
    let nodes = start_all(&all).await;
    let victim = &nodes[2];
    let victim_session = victim.campaign(DSP, "c1").await.unwrap()["this_node"]["session"]
        .as_str()
        .unwrap()
        .to_owned();

    // Load over all three; half the wins so far render, their pixels landing on the victim
    // (it bills them: counted durably by the claim, maybe never reported by the node).
    let done = AtomicUsize::new(0);
    let killed = Mutex::new(Vec::new());
    let first = load("rc-a", &nodes, 150, &done, &killed, false).await;
    let (render_a, _) = first.wins.split_at(first.wins.len() / 2);
    fire_twice(render_a, victim, &nodes[0]).await;

    // More load over all three, and the victim SIGKILLed in the middle of it.
    let holding = Arc::new(AtomicBool::new(false));
    let running = load("rc-b", &nodes, 300, &done, &killed, false);
    let kill = async {
        let base = done.load(Ordering::Relaxed);
        let some = eventually(PATIENCE, || {
            std::future::ready(done.load(Ordering::Relaxed) >= base + 100)
        })
        .await;
        assert!(some, "the load never got going");
        // What the victim holds per campaign just before it dies, as the store sees it.
        let mut held = BTreeMap::new();
        for cid in CIDS {
            let state = nodes[0].campaign(DSP, cid).await.unwrap();
            let mine = state["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["session"] == victim_session.as_str())
                .map_or(0, |s| s["held"].as_u64().unwrap());
            held.insert(cid, mine);
        }
        killed.lock().unwrap().push(2);
        victim.kill();
        let died = Instant::now();
        holding.store(held.values().any(|h| *h > 0), Ordering::Relaxed);
        // Its leases come back within its TTL plus one sync interval (plus an allowance for
        // a loaded 2-core machine scheduling the live nodes' rounds, not part of the rule).
        let limit = Duration::from_millis(VICTIM_TTL_MS + SYNC_MS);
        let margin = Duration::from_millis(500);
        let back = eventually(limit + margin + PATIENCE, || async {
            for cid in CIDS {
                let Some(state) = nodes[0].campaign(DSP, cid).await else {
                    return false;
                };
                let back = state["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|s| s["session"] == victim_session.as_str())
                    .all(|s| s["held"] == 0 && s["reclaimed"] == true);
                if !back {
                    return false;
                }
            }
            true
        })
        .await;
        let took = died.elapsed();
        assert!(back, "the dead node's leases never came back");
        eprintln!(
            "a SIGKILLed node's leases {held:?} came back {took:?} after the kill \
             (node_ttl {VICTIM_TTL_MS} ms + sync {SYNC_MS} ms, margin {margin:?})"
        );
        assert!(
            took <= limit + margin,
            "leases back after {took:?}, over {limit:?} + {margin:?}"
        );
    };
    let (second, ()) = tokio::join!(running, kill);
    assert!(
        holding.load(Ordering::Relaxed),
        "the victim held nothing when it died: the test proved nothing"
    );
    let live = &nodes[..2];
    let reclaimed = sum_metric(live, "budget_sessions_reclaimed_total", &[]).await;
    assert_eq!(reclaimed, 1, "the dead session is reclaimed exactly once");

    // The rest of the wins: a third of the second run's render, on the live nodes; the others
    // never render and are credited back once their bucket settles.
    let render_b: Vec<Win> = second
        .wins
        .iter()
        .filter(|w| w.node != 2)
        .step_by(3)
        .cloned()
        .collect();
    fire_twice(&render_b, &nodes[0], &nodes[1]).await;
    let mut rendered = BTreeMap::<&str, u64>::new();
    for w in render_a.iter().chain(&render_b) {
        *rendered
            .entry(CIDS.iter().find(|c| **c == w.cid).unwrap())
            .or_default() += COST;
    }
    // The durable billed counts hold exactly the rendered impressions, including those the
    // killed node billed.
    let conn = redislink::open(&Target::Cluster(cluster.seeds()), CALL).unwrap();
    let durable = durable_billed(&conn).await;
    for cid in CIDS {
        assert_eq!(
            durable.get(cid).copied().unwrap_or(0),
            rendered.get(cid).copied().unwrap_or(0),
            "{cid}: durable billed counts"
        );
    }

    // Settlement: every bucket settled; billed is what rendered (durably counted, also what
    // the dead node billed and never reported); credits never exceed the unrendered charges,
    // so what stays spent covers every rendered impression.
    for cid in CIDS {
        let want_billed = rendered.get(cid).copied().unwrap_or(0);
        let last = Mutex::new(serde_json::Value::Null);
        let settled = eventually(PATIENCE, || {
            let (last, nodes) = (&last, &nodes);
            async move {
                let Some(state) = nodes[0].campaign(DSP, cid).await else {
                    return false;
                };
                let rec = &state["reconciliation"];
                let quiet = rec["open_buckets"] == 0
                    && rec["settled_buckets"].as_u64().unwrap_or(0) > 0
                    && state["this_node"]["unreported_micros"] == 0
                    && rec["unreported_charged"] == 0
                    && rec["unreported_billed"] == 0;
                *last.lock().unwrap() = state;
                quiet
            }
        })
        .await;
        let last = last.into_inner().unwrap();
        assert!(settled, "{cid}: buckets never settled: {last}");
        let rec = &last["reconciliation"];
        let get = |k: &str| rec[k].as_u64().unwrap();
        assert_eq!(get("billed"), want_billed, "{cid}: {rec}");
        assert_eq!(get("uncredited"), 0, "{cid}: {rec}");
        assert_eq!(
            get("credited") + want_billed,
            get("charged") + get("billed_beyond_charged"),
            "{cid}: credited must be charged − billed per bucket: {rec}"
        );
        let spent = last["spent_micros"].as_u64().unwrap();
        assert!(
            spent >= want_billed,
            "{cid}: over-credited: {spent} spent for {want_billed} rendered: {last}"
        );
        eprintln!(
            "{cid}: charged {} billed {} credited {} beyond {} spent {spent}",
            get("charged"),
            get("billed"),
            get("credited"),
            get("billed_beyond_charged")
        );
    }
    eprintln!(
        "killed-node test: {} + {} wins, {} refused by the dead node, took {:?}",
        first.wins.len(),
        second.wins.len(),
        second.refused,
        started.elapsed()
    );
}

/// Micros billed per campaign in the durable counts: every `budget:billed:{iNN}:START`
/// hash, field `LEN:DSPCID`.
async fn durable_billed(conn: &RedisConn) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    let nodes: String = conn
        .query(&redis::cmd("CLUSTER").arg("NODES").clone(), CALL)
        .await
        .unwrap();
    let masters: Vec<String> = nodes
        .lines()
        .filter(|l| l.contains("master") && !l.contains("fail"))
        .filter_map(|l| l.split(' ').nth(1)?.split('@').next().map(str::to_owned))
        .collect();
    let field = format!("{}:{DSP}", DSP.len());
    for master in masters {
        let client = redis::Client::open(format!("redis://{master}")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("budget:billed:*")
            .query_async(&mut c)
            .await
            .unwrap();
        for key in keys {
            let hash: HashMap<String, u64> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            for (f, micros) in hash {
                let cid = f
                    .strip_prefix(&field)
                    .unwrap_or_else(|| panic!("{key} {f}"));
                *sums.entry(cid.to_owned()).or_default() += micros;
            }
        }
    }
    sums
}
