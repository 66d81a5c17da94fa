//! What travels and how it is told apart: the process clock, the stamped messages
//! (ringcast-load's format, so every server relays the same bytes to both clients), the
//! per-sender order check, and the dialling of loopback URLs.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// One client connection.
pub type Ws = WebSocketStream<TcpStream>;

static START: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process clock started (its first use). Every stamp and every
/// deadline is on this clock; sender and receiver are this process, so no wall clock is
/// involved.
pub fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The `Instant` `ns` nanoseconds after the process clock started.
pub fn instant_at(ns: u64) -> Instant {
    *START.get_or_init(Instant::now) + Duration::from_nanos(ns)
}

/// What a message says about itself: `p=SENDER s=SEQ t=NANOS`, then a space and `x`
/// padding up to the message size. The same text ringcast-load sends, so a server does
/// the same work for both clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher number (fanout) or connection number (echo).
    pub sender: u32,
    /// The sender's sequence number, from 0.
    pub seq: u64,
    /// When it was sent (or due, at a fixed rate), on [`now_ns`]'s clock.
    pub time: u64,
}

impl Stamp {
    /// The message text: the stamp, padded with ` xxx…` to `size` bytes (a stamp longer
    /// than `size` is sent whole).
    pub fn text(&self, size: usize) -> String {
        let mut out = String::with_capacity(size.max(32));
        let _ = write!(out, "p={} s={} t={}", self.sender, self.seq, self.time);
        if out.len() < size {
            out.push(' ');
            let pad = size - out.len();
            out.extend(std::iter::repeat_n('x', pad));
        }
        out
    }

    /// Whether `line` begins like one of these messages (so a line that does not parse
    /// was damaged rather than being the server's own).
    pub fn looks_like_one(line: &[u8]) -> bool {
        line.starts_with(b"p=")
    }

    /// The stamp that begins `line`, if there is one.
    pub fn parse(line: &[u8]) -> Option<Stamp> {
        let (sender, rest) = field(line, b"p=")?;
        let (seq, rest) = field(rest, b" s=")?;
        let (time, rest) = field(rest, b" t=")?;
        if rest.first().is_some_and(|&b| b != b' ') {
            return None;
        }
        Some(Stamp {
            sender: u32::try_from(sender).ok()?,
            seq,
            time,
        })
    }
}

/// `prefix`, then a decimal number that fits in a u64; the number and what follows.
fn field<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<(u64, &'a [u8])> {
    let rest = bytes.strip_prefix(prefix)?;
    let len = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    if len == 0 {
        return None;
    }
    let value = rest[..len].iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((value, &rest[len..]))
}

/// How a sequence number arrived at one receiver from one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Higher than any before (numbers skipped may still come: then they are late).
    InOrder,
    /// Lower than one already seen, and new: overtaken.
    Late,
    /// Seen before.
    Duplicate,
}

/// The numbers one receiver has had from one sender: one past the highest, and which of
/// the 64 below that came. A number more than 64 below the highest counts as late.
#[derive(Debug, Clone, Copy, Default)]
pub struct Order {
    /// One past the highest number seen (0: none yet).
    next: u64,
    /// Bit `i`: number `next - 1 - i` was seen.
    recent: u64,
}

impl Order {
    /// Notes `seq`; how it arrived.
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq - self.next + 1;
            self.recent = if shift >= 64 { 0 } else { self.recent << shift };
            self.recent |= 1;
            self.next = seq + 1;
            return Arrival::InOrder;
        }
        let back = self.next - 1 - seq;
        if back >= 64 {
            return Arrival::Late;
        }
        let bit = 1u64 << back;
        if self.recent & bit != 0 {
            return Arrival::Duplicate;
        }
        self.recent |= bit;
        Arrival::Late
    }
}

/// Where every connection goes: a `ws://` URL on a loopback address, resolved once.
#[derive(Debug)]
pub struct Target {
    url: String,
    addr: SocketAddr,
    /// tungstenite's `read_buffer_size`.
    read_buffer: usize,
}

impl Target {
    /// Checks `url` (ws:// only, loopback only) and resolves its host; connections will
    /// read through a buffer of `read_buffer` bytes.
    pub fn new(url: &str, read_buffer: usize) -> Result<Target, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: only ws:// URLs (no TLS)"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let has_port = match authority.rfind(']') {
            Some(bracket) => authority[bracket..].contains(':'),
            None => authority.contains(':'),
        };
        let host_port = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = host_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address for {authority}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{url}: peer-load dials loopback addresses only"));
        }
        Ok(Target {
            url: url.to_owned(),
            addr,
            read_buffer,
        })
    }

    /// Connects (TCP_NODELAY, as the servers set it) and makes the opening handshake,
    /// with tokio-tungstenite's default configuration but the read buffer's size.
    pub async fn dial(&self) -> Result<Ws, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let config = WebSocketConfig::default().read_buffer_size(self.read_buffer);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(self.url.as_str(), tcp, Some(config))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        Ok(ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_padded_and_parse_back() {
        let stamp = Stamp {
            sender: 2,
            seq: 981,
            time: 123_456_789,
        };
        let text = stamp.text(64);
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("p=2 s=981 t=123456789 xx"), "{text}");
        assert_eq!(Stamp::parse(text.as_bytes()), Some(stamp));
        let short = stamp.text(5);
        assert_eq!(short, "p=2 s=981 t=123456789");
        assert_eq!(Stamp::parse(short.as_bytes()), Some(stamp));
    }

    #[test]
    fn other_lines_are_not_stamps() {
        for line in [
            &b""[..],
            b"{\"type\":\"join\",\"room\":\"bench\",\"count\":3}",
            b"p=1",
            b"p=1 s=2 t=",
            b"p=1 s=2 t=3y",
            b"p=4294967296 s=0 t=0",
            b"p=0 s=18446744073709551616 t=0",
        ] {
            assert_eq!(
                Stamp::parse(line),
                None,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn order_tells_late_from_duplicate() {
        let mut order = Order::default();
        assert_eq!(order.observe(0), Arrival::InOrder);
        assert_eq!(order.observe(1), Arrival::InOrder);
        assert_eq!(order.observe(1), Arrival::Duplicate);
        assert_eq!(order.observe(4), Arrival::InOrder);
        assert_eq!(order.observe(3), Arrival::Late);
        assert_eq!(order.observe(3), Arrival::Duplicate);
        assert_eq!(order.observe(200), Arrival::InOrder);
        assert_eq!(order.observe(2), Arrival::Late);
        assert_eq!(order.observe(199), Arrival::Late);
        assert_eq!(order.observe(200), Arrival::Duplicate);
    }

    #[test]
    fn targets_are_loopback_ws_urls() {
        let t = Target::new("ws://127.0.0.1:9001/ws?room=bench", 4096).unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(t.url, "ws://127.0.0.1:9001/ws?room=bench");
        assert_eq!(
            Target::new("ws://[::1]:7/echo", 4096).unwrap().addr,
            "[::1]:7".parse().unwrap()
        );
        assert_eq!(Target::new("ws://127.0.0.1", 4096).unwrap().addr.port(), 80);
        assert!(Target::new("wss://127.0.0.1:1/", 4096).is_err());
        assert!(Target::new("ws://10.1.2.3:80/", 4096).is_err());
    }
}
