//! One contract, two stores: `RedisStore` (real redis-server) and `MemoryStore` must agree.

use budget::{CampaignKey, Error, MemoryStore, RedisStore, Store, SyncItem, MAX_MICROS};
use loadtest::redis::RedisServer;
use std::time::Duration;

fn item(key: &CampaignKey, granted: u64, spent: u64, returned: u64, want: u64) -> SyncItem {
    SyncItem {
        key: key.clone(),
        granted,
        spent,
        returned,
        want,
    }
}

/// Grant of a one-item sync, panicking if the campaign is absent.
async fn grant(store: &dyn Store, session: &str, it: SyncItem) -> budget::Grant {
    let mut out = store.sync(session, &[it]).await.unwrap();
    assert_eq!(out.len(), 1);
    out.pop().unwrap().expect("campaign exists")
}

async fn contract(store: &dyn Store) {
    // Awkward names on purpose: separators and hash-tag braces must survive.
    let key = CampaignKey::new("dsp:one", "c{1}%");

    // Absent campaign.
    assert!(store.state(&key).await.unwrap().is_none());
    assert_eq!(
        store.sync("a", &[item(&key, 0, 0, 0, 100)]).await.unwrap(),
        vec![None]
    );
    assert!(matches!(
        store.set_paused(&key, true).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.reclaim(&key, "a").await,
        Err(Error::NotFound(_))
    ));

    // Seeding creates once and never overrides.
    assert!(store.seed_if_absent(&key, 1_000, false).await.unwrap());
    assert!(!store.seed_if_absent(&key, 5_000, true).await.unwrap());
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!((s.budget, s.spent, s.held, s.paused), (1_000, 0, 0, false));
    assert!(s.nodes.is_empty());
    assert!(store.campaigns().await.unwrap().contains(&key));

    // Grants are capped by what is left.
    let g = grant(store, "a", item(&key, 0, 0, 0, 600)).await;
    assert_eq!((g.granted, g.held, g.budget), (600, 600, 1_000));
    let g = grant(store, "b", item(&key, 0, 0, 0, 600)).await;
    assert_eq!((g.granted, g.held), (400, 1_000));

    // The same report twice (its reply lost, then retried) counts once and answers alike.
    let first = grant(store, "a", item(&key, 600, 250, 0, 600)).await;
    let again = grant(store, "a", item(&key, 600, 250, 0, 600)).await;
    assert_eq!(first, again);
    assert_eq!((first.granted, first.spent, first.held), (600, 250, 750));
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!((s.spent, s.held), (250, 750));
    let a = s.nodes.iter().find(|n| n.session == "a").unwrap();
    assert_eq!((a.granted, a.spent, a.returned, a.held), (600, 250, 0, 350));
    let b = s.nodes.iter().find(|n| n.session == "b").unwrap();
    assert_eq!(b.held, 400);

    // An older report arriving late changes nothing.
    let late = grant(store, "a", item(&key, 600, 100, 0, 0)).await;
    assert_eq!((late.spent, late.held, late.granted), (250, 750, 600));

    // A budget below what is spent or held is refused; raising it gives more lease.
    assert!(matches!(
        store.set_budget(&key, 900).await,
        Err(Error::BelowCommitted {
            budget: 900,
            committed: 1_000
        })
    ));
    assert_eq!(store.set_budget(&key, 2_000).await.unwrap().budget, 2_000);
    let g = grant(store, "a", item(&key, 600, 250, 0, 600)).await;
    assert_eq!(g.granted, 850, "topped up from 350 to 600");

    // Paused: no new money, but reports still count.
    assert!(store.set_paused(&key, true).await.unwrap().paused);
    let g = grant(store, "b", item(&key, 400, 100, 0, 1_000)).await;
    assert!(g.paused);
    assert_eq!((g.granted, g.spent), (400, 350));
    assert!(!store.set_paused(&key, false).await.unwrap().paused);

    // Raising by an amount.
    assert_eq!(store.add_budget(&key, 500).await.unwrap().budget, 2_500);

    // b hands back the 300 it holds; then its record can be forgotten, a's (holding) cannot.
    let g = grant(store, "b", item(&key, 400, 100, 300, 0)).await;
    assert_eq!((g.spent, g.held), (350, 600));
    store
        .end_session("b", std::slice::from_ref(&key))
        .await
        .unwrap();
    store
        .end_session("a", std::slice::from_ref(&key))
        .await
        .unwrap();
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!(
        s.nodes
            .iter()
            .map(|n| n.session.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );

    // Reclaiming a dead session frees what it held; it gets nothing more, but spend it still
    // reports is counted.
    assert_eq!(store.reclaim(&key, "a").await.unwrap(), 600);
    assert_eq!(store.reclaim(&key, "nobody").await.unwrap(), 0);
    let s = store.state(&key).await.unwrap().unwrap();
    assert_eq!((s.spent, s.held), (350, 0));
    assert!(s.nodes[0].reclaimed);
    let g = grant(store, "a", item(&key, 850, 400, 0, 500)).await;
    assert_eq!((g.granted, g.spent, g.held), (850, 500, 0));

    // A grant the store lost (restored from an older snapshot) is held again, not re-granted.
    let fresh = CampaignKey::new("dsp:one", "lost");
    assert!(store.seed_if_absent(&fresh, 1_000, false).await.unwrap());
    let g = grant(store, "c", item(&fresh, 400, 100, 0, 300)).await;
    assert_eq!((g.granted, g.spent, g.held), (400, 100, 300));

    // Amounts the store cannot keep exactly are refused.
    assert!(matches!(
        store.set_budget(&key, MAX_MICROS + 1).await,
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        store.add_budget(&key, MAX_MICROS).await,
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        store
            .seed_if_absent(&CampaignKey::new("d", "huge"), MAX_MICROS + 1, false)
            .await,
        Err(Error::TooLarge(_))
    ));
    assert!(store
        .state(&CampaignKey::new("d", "huge"))
        .await
        .unwrap()
        .is_none());
    let big = CampaignKey::new("d", "big");
    let s = store.set_budget(&big, MAX_MICROS).await.unwrap();
    assert_eq!(s.budget, MAX_MICROS);
    let g = grant(store, "a", item(&big, 0, 0, 0, MAX_MICROS - 1)).await;
    assert_eq!((g.granted, g.held), (MAX_MICROS - 1, MAX_MICROS - 1));
}

/// Hundreds of campaigns in one report (several script calls in one round trip), answered in
/// order, absent ones included.
async fn many_campaigns(store: &dyn Store) {
    let keys: Vec<CampaignKey> = (0..600)
        .map(|i| CampaignKey::new("bulk", &format!("c{i}")))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        if i % 7 != 0 {
            store
                .seed_if_absent(key, 1_000 + i as u64, false)
                .await
                .unwrap();
        }
    }
    let items: Vec<SyncItem> = keys.iter().map(|k| item(k, 0, 0, 0, 5_000)).collect();
    let grants = store.sync("n", &items).await.unwrap();
    assert_eq!(grants.len(), keys.len());
    for (i, g) in grants.iter().enumerate() {
        if i % 7 == 0 {
            assert!(g.is_none(), "campaign {i} was never created");
        } else {
            let g = g.expect("created campaign");
            assert_eq!(g.granted, 1_000 + i as u64, "campaign {i}");
        }
    }
    let listed = store.campaigns().await.unwrap();
    assert_eq!(
        listed.iter().filter(|k| &*k.dsp == "bulk").count(),
        600 - 86
    );
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    let store = MemoryStore::new();
    contract(&store).await;
    many_campaigns(&store).await;
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let redis = RedisServer::start().expect("start redis-server");
    let store = RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    contract(&store).await;
    many_campaigns(&store).await;
}

#[tokio::test]
async fn redis_prefixes_keep_stores_apart() {
    let redis = RedisServer::start().expect("start redis-server");
    let one = RedisStore::open(&redis.url(), "one", Duration::from_secs(2)).unwrap();
    let two = RedisStore::open(&redis.url(), "two", Duration::from_secs(2)).unwrap();
    let key = CampaignKey::new("d", "c");
    assert!(one.seed_if_absent(&key, 100, false).await.unwrap());
    assert!(two.state(&key).await.unwrap().is_none());
    assert!(two.campaigns().await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_store_survives_a_flushed_script_cache() {
    let redis = RedisServer::start().expect("start redis-server");
    let store = RedisStore::open(&redis.url(), "budget", Duration::from_secs(2)).unwrap();
    let key = CampaignKey::new("d", "c");
    store.seed_if_absent(&key, 1_000, false).await.unwrap();
    assert_eq!(
        grant(&store, "n", item(&key, 0, 0, 0, 100)).await.granted,
        100
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        grant(&store, "n", item(&key, 100, 0, 0, 300)).await.granted,
        300
    );
}
