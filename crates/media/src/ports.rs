//! RTP port ownership: every call holds an even RTP port and the RTCP port above it for its whole
//! life, and gives both back when it ends, whatever way it ends (the lease releases on drop).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

#[derive(Debug)]
struct Inner {
    free: BTreeSet<u16>,
    /// Round-robin start, so a just-released port is not reused at once (late packets of the old
    /// call would land in the new one).
    next: u16,
}

#[derive(Clone, Debug)]
pub struct PortPool {
    ip: IpAddr,
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

/// A bound RTP/RTCP socket pair; dropping it frees the ports.
#[derive(Debug)]
pub struct PortLease {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub port: u16,
    pool: Arc<Mutex<Inner>>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut g) = self.pool.lock() {
            g.free.insert(self.port);
        }
    }
}

impl PortPool {
    /// `lo..=hi`; odd bounds are rounded inward so every RTP port is even (RFC 3550 §11).
    pub fn new(ip: IpAddr, lo: u16, hi: u16) -> PortPool {
        let lo = lo + (lo % 2);
        let free: BTreeSet<u16> = (lo..hi).step_by(2).collect();
        let capacity = free.len();
        PortPool {
            ip,
            inner: Arc::new(Mutex::new(Inner { free, next: lo })),
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn in_use(&self) -> usize {
        self.capacity - self.inner.lock().map(|g| g.free.len()).unwrap_or(0)
    }

    fn take(&self) -> Option<u16> {
        let mut g = self.inner.lock().ok()?;
        let port = g
            .free
            .range(g.next..)
            .next()
            .copied()
            .or_else(|| g.free.iter().next().copied())?;
        g.free.remove(&port);
        g.next = port.wrapping_add(2);
        Some(port)
    }

    /// Binds the next free pair. Ports another program holds are skipped (and stay out of the
    /// pool until a later pass finds them free again).
    pub fn allocate(&self) -> Option<PortLease> {
        for _ in 0..self.capacity.min(64) {
            let port = self.take()?;
            let rtp = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port));
            let rtcp = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port + 1));
            match (rtp, rtcp) {
                (Ok(a), Ok(b)) => {
                    if a.set_nonblocking(true).is_err() || b.set_nonblocking(true).is_err() {
                        self.give_back(port);
                        continue;
                    }
                    match (UdpSocket::from_std(a), UdpSocket::from_std(b)) {
                        (Ok(rtp), Ok(rtcp)) => {
                            return Some(PortLease {
                                rtp,
                                rtcp,
                                port,
                                pool: self.inner.clone(),
                            })
                        }
                        _ => self.give_back(port),
                    }
                }
                _ => {
                    tracing::debug!(port, "RTP port busy, skipped");
                    self.give_back(port);
                }
            }
        }
        None
    }

    fn give_back(&self, port: u16) {
        if let Ok(mut g) = self.inner.lock() {
            g.free.insert(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leases_are_even_and_returned_on_drop() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 41001, 41010);
        assert_eq!(pool.capacity(), 4);
        let a = pool.allocate().unwrap();
        assert_eq!(a.port % 2, 0);
        let b = pool.allocate().unwrap();
        let c = pool.allocate().unwrap();
        let d = pool.allocate().unwrap();
        assert!(pool.allocate().is_none());
        assert_eq!(pool.in_use(), 4);
        drop((a, b, c, d));
        assert_eq!(pool.in_use(), 0);
        assert!(pool.allocate().is_some());
    }
}
