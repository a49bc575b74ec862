//! Network emulation: a round-trip time charged per TCP connection and per client "flight",
//! and the count of accepted connections.
//!
//! Model (half-duplex request/response traffic, which is what HTTP/1.1 and TLS handshakes are):
//! * a new connection costs one RTT before the server looks at its first byte (the TCP
//!   handshake the client waited for);
//! * every flight of client bytes costs one RTT before the server sees it: a flight is the
//!   first bytes read on a connection, or the first bytes read after the server wrote something.
//!   The delay starts when the bytes are there, so an idle keep-alive connection is not charged.
//!
//! So a request on a kept-alive connection takes 1 RTT more, one on a new plain connection
//! 2 RTT, a new TLS 1.3 connection 3 RTT and a new TLS 1.2 connection 4 RTT — the round trips
//! a client sees on a real network. Bandwidth, loss and jitter are not emulated.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Run-time network settings and counters shared by every listener.
#[derive(Debug, Default)]
pub(crate) struct NetState {
    rtt_ms: Arc<AtomicU64>,
    connections: AtomicU64,
}

impl NetState {
    pub(crate) fn new(rtt_ms: u64) -> NetState {
        NetState {
            rtt_ms: Arc::new(AtomicU64::new(rtt_ms)),
            connections: AtomicU64::new(0),
        }
    }
    pub(crate) fn rtt(&self) -> Duration {
        Duration::from_millis(self.rtt_ms.load(Ordering::Relaxed))
    }
    pub(crate) fn set_rtt(&self, rtt: Duration) {
        let ms = u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX);
        self.rtt_ms.store(ms, Ordering::Relaxed);
    }
    pub(crate) fn count_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
    pub(crate) fn reset_connections(&self) {
        self.connections.store(0, Ordering::Relaxed);
    }

    /// Wraps an accepted connection; the RTT is read at each flight, so changes apply at once.
    pub(crate) fn wrap(&self, inner: TcpStream) -> RttStream {
        RttStream {
            inner,
            rtt_ms: self.rtt_ms.clone(),
            charge: true,
            timer: None,
        }
    }
}

impl RttStream {
    /// A connection without emulation (the control-only listener).
    pub(crate) fn plain(inner: TcpStream) -> RttStream {
        RttStream {
            inner,
            rtt_ms: Arc::new(AtomicU64::new(0)),
            charge: false,
            timer: None,
        }
    }
}

/// The server side of a connection with the round trip of each client flight charged.
pub(crate) struct RttStream {
    inner: TcpStream,
    rtt_ms: Arc<AtomicU64>,
    /// The next bytes read start a new client flight.
    charge: bool,
    timer: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for RttStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.charge && this.timer.is_none() {
            let rtt = Duration::from_millis(this.rtt_ms.load(Ordering::Relaxed));
            if rtt.is_zero() {
                this.charge = false;
            } else {
                // Wait for the flight's first byte without consuming it, then start its RTT.
                let mut one = [0u8; 1];
                let mut peek = ReadBuf::new(&mut one);
                match ready!(this.inner.poll_peek(cx, &mut peek)) {
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(0) => this.charge = false,
                    Ok(_) => this.timer = Some(Box::pin(tokio::time::sleep(rtt))),
                }
            }
        }
        if let Some(timer) = this.timer.as_mut() {
            ready!(timer.as_mut().poll(cx));
            this.timer = None;
            this.charge = false;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for RttStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if n > 0 {
            this.charge = true;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if n > 0 {
            this.charge = true;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
