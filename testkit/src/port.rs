//! Free loopback ports, for servers a test starts on a port chosen in advance (a Redis that a
//! client already points at, a restart on the same port).

use std::io;
use std::net::TcpListener;

/// A loopback port nothing listens on right now (bound, then released). Another process can
/// take it before the caller binds it: whoever starts a server on it must check that the
/// server answering is its own (as [`crate::RedisServer`] does).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
