//! What a mock DSP remembers: atomic counters and bounded buffers of recent requests and notices.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

/// A snapshot of a mock's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MockDspStats {
    /// `POST /bid` requests received, whatever the behaviour, including ones answered 400/413.
    pub requests: u64,
    /// Bid objects sent (a response with three bids counts three).
    pub bids_sent: u64,
    /// Answers that said "no bid" the OpenRTB way: 204, `{}`, `nbr`, or a `Bid` mock that
    /// drew no bid for any imp.
    pub no_bids: u64,
    /// Requests the mock could not use: body over the size bound, or not JSON where the
    /// behaviour needs to read it (`Bid`, `WrongId`, `Trickle`). Answered 400/413.
    pub bad_requests: u64,
    /// Hits on `/nurl`.
    pub nurl_hits: u64,
    /// Hits on `/burl`.
    pub burl_hits: u64,
    /// Hits on `/lurl`.
    pub lurl_hits: u64,
    /// The `tmax` of the last request that carried one.
    pub last_tmax: Option<u64>,
    /// Connections open right now.
    pub open_connections: u64,
    /// Connections accepted since start (TLS ones once their handshake succeeded).
    pub connections: u64,
    /// `POST /bid` requests that came over HTTP/2.
    pub http2_requests: u64,
    /// Requests to `/bid` with another method than `POST` (a client warming its pool),
    /// answered 405.
    pub other_methods: u64,
}

/// Which notice endpoint was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// Win notice, `/nurl`.
    Nurl,
    /// Billing notice, `/burl`.
    Burl,
    /// Loss notice, `/lurl`.
    Lurl,
}

impl NoticeKind {
    /// The endpoint's path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Nurl => "/nurl",
            Self::Burl => "/burl",
            Self::Lurl => "/lurl",
        }
    }
}

impl fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path()[1..])
    }
}

/// One notice hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Which endpoint.
    pub kind: NoticeKind,
    /// The path and query exactly as received, e.g. `/nurl?price=1.25&imp=1&...`.
    pub uri: String,
}

impl Notice {
    /// The value of query parameter `key`, as received (not percent-decoded), if present.
    pub fn param(&self, key: &str) -> Option<&str> {
        let (_, query) = self.uri.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }
}

/// A FIFO that drops its oldest entry when full. A capacity of 0 records nothing.
pub(crate) struct Ring<T> {
    cap: usize,
    items: Mutex<VecDeque<T>>,
}

impl<T: Clone> Ring<T> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            items: Mutex::new(VecDeque::with_capacity(cap.min(1024))),
        }
    }

    pub(crate) fn push(&self, item: T) {
        if self.cap == 0 {
            return;
        }
        let mut items = self.lock();
        if items.len() == self.cap {
            items.pop_front();
        }
        items.push_back(item);
    }

    pub(crate) fn snapshot(&self) -> Vec<T> {
        self.lock().iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// A panic while holding this lock can only come from a failed allocation; the deque is
    /// still consistent then, so a poisoned lock is simply taken over.
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The live counters behind [`MockDspStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) bids_sent: AtomicU64,
    pub(crate) no_bids: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
    pub(crate) nurl_hits: AtomicU64,
    pub(crate) burl_hits: AtomicU64,
    pub(crate) lurl_hits: AtomicU64,
    /// `tmax + 1`, so 0 can mean "never seen".
    pub(crate) last_tmax_plus_one: AtomicU64,
    pub(crate) open_connections: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) http2_requests: AtomicU64,
    pub(crate) other_methods: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn notice(&self, kind: NoticeKind) {
        let c = match kind {
            NoticeKind::Nurl => &self.nurl_hits,
            NoticeKind::Burl => &self.burl_hits,
            NoticeKind::Lurl => &self.lurl_hits,
        };
        Self::bump(c, 1);
    }

    pub(crate) fn snapshot(&self) -> MockDspStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MockDspStats {
            requests: get(&self.requests),
            bids_sent: get(&self.bids_sent),
            no_bids: get(&self.no_bids),
            bad_requests: get(&self.bad_requests),
            nurl_hits: get(&self.nurl_hits),
            burl_hits: get(&self.burl_hits),
            lurl_hits: get(&self.lurl_hits),
            last_tmax: get(&self.last_tmax_plus_one).checked_sub(1),
            open_connections: get(&self.open_connections),
            connections: get(&self.connections),
            http2_requests: get(&self.http2_requests),
            other_methods: get(&self.other_methods),
        }
    }
}

/// Everything a mock records, shared by its connections.
pub(crate) struct Recorder {
    pub(crate) counters: Counters,
    pub(crate) received: Ring<Bytes>,
    pub(crate) notices: Ring<Notice>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_entries() {
        let r = Ring::new(3);
        for i in 0..5 {
            r.push(i);
        }
        assert_eq!(r.snapshot(), vec![2, 3, 4]);
        r.clear();
        assert!(r.snapshot().is_empty());
    }

    #[test]
    fn zero_capacity_ring_records_nothing() {
        let r = Ring::new(0);
        r.push(1);
        assert!(r.snapshot().is_empty());
    }

    #[test]
    fn notice_params_are_found_by_key() {
        let n = Notice {
            kind: NoticeKind::Lurl,
            uri: "/lurl?price=1.5&imp=i1&loss=102&flag".into(),
        };
        assert_eq!(n.param("price"), Some("1.5"));
        assert_eq!(n.param("loss"), Some("102"));
        assert_eq!(n.param("flag"), Some(""));
        assert_eq!(n.param("mtw"), None);
        assert_eq!(n.kind.to_string(), "lurl");
    }

    #[test]
    fn tmax_is_absent_until_seen() {
        let c = Counters::default();
        assert_eq!(c.snapshot().last_tmax, None);
        c.last_tmax_plus_one.store(121, Ordering::Relaxed);
        assert_eq!(c.snapshot().last_tmax, Some(120));
    }
}
