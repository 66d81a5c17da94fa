//! Shared bits of the example programs.

use ringcast::server::ServerHandle;

/// Starts a thread that turns the first SIGINT or SIGTERM into a graceful shutdown of
/// `server` (close 1001 to every connection, wait for the answers, stop). A second signal
/// ends the process at once.
pub fn shutdown_on_signals(server: &ServerHandle) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let server = server.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = signals.forever();
            if let Some(signal) = seen.next() {
                tracing::info!(signal, "shutting down: closing every connection with 1001");
                server.shutdown();
            }
            if seen.next().is_some() {
                std::process::exit(130);
            }
        })?;
    Ok(())
}

/// The value of query parameter `name` in a request target (`/ws?room=a%20b` gives
/// `a b`), percent-decoded.
pub fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Every value of query parameter `name`, in order (`?topic=a&topic=b`).
pub fn query_params(target: &str, name: &str) -> Vec<String> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_param("/ws?room=a%20b&x=1", "room").as_deref(),
            Some("a b")
        );
        assert_eq!(query_param("/ws", "room"), None);
        assert_eq!(query_params("/ws?topic=a&topic=b", "topic"), ["a", "b"]);
    }
}
