//! Name resolution bounded by the dial's deadline. The system resolver blocks for as
//! long as it likes (seconds per unanswered server), with no timeout to pass it, so a
//! lookup runs on a thread of its own and the dial stops waiting at the deadline; the
//! thread ends when the resolver returns.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Instant;

/// The addresses of `host` (an IP literal needs no lookup), found by `deadline`.
pub(crate) fn resolve(
    host: &str,
    port: u16,
    deadline: Option<Instant>,
) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    resolve_with(host.to_owned(), port, deadline, system_lookup)
}

fn system_lookup(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host.as_str(), port).to_socket_addrs()?.collect())
}

/// Run `lookup` for `host`, waiting for it until `deadline` at most.
fn resolve_with<F>(
    host: String,
    port: u16,
    deadline: Option<Instant>,
    lookup: F,
) -> io::Result<Vec<SocketAddr>>
where
    F: FnOnce(String, u16) -> io::Result<Vec<SocketAddr>> + Send + 'static,
{
    let Some(deadline) = deadline else {
        return lookup(host, port);
    };
    let (tx, rx) = mpsc::sync_channel(1);
    let name = host.clone();
    std::thread::Builder::new()
        .name("ringcast-resolve".into())
        .spawn(move || {
            // The dial may have stopped waiting: then nobody hears the answer.
            let _ = tx.send(lookup(name, port));
        })?;
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(found) => found,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("resolving {host}: dial deadline passed"),
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(io::Error::other(format!(
            "resolving {host}: the lookup thread ended without an answer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_lookup_slower_than_the_deadline_times_out_at_the_deadline() {
        let slow = |_: String, _: u16| {
            std::thread::sleep(Duration::from_secs(5));
            Ok(Vec::new())
        };
        let started = Instant::now();
        let deadline = Some(started + Duration::from_millis(100));
        let err = resolve_with("slow.example".into(), 80, deadline, slow).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // A hang guard, far from the deadline: the 5 s lookup was not waited for.
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn an_ip_literal_needs_no_lookup() {
        let addrs = resolve("127.0.0.1", 9, Some(Instant::now())).unwrap();
        assert_eq!(addrs, vec![SocketAddr::from(([127, 0, 0, 1], 9))]);
    }

    #[test]
    fn a_lookup_within_the_deadline_gives_its_addresses() {
        let fast = |_: String, port: u16| Ok(vec![SocketAddr::from(([10, 0, 0, 1], port))]);
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        let addrs = resolve_with("fast.example".into(), 81, deadline, fast).unwrap();
        assert_eq!(addrs, vec![SocketAddr::from(([10, 0, 0, 1], 81))]);
    }
}
