//! The echo server's async backend: one tokio task per connection over `AsyncConn`,
//! with the blocking backend's bounds (`--max-conns`, answered 503 past it; an idle and
//! a write timeout per connection; the read limit).

use std::sync::Arc;
use std::time::Duration;

use ringcast::{AsyncConn, CloseCode, Error, Upgrader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{is_timeout, log_end, server_full, upgrader, Args, Timeouts, REFUSALS_QUEUED};

/// Serve until killed, on `--workers` runtime threads (0: one per CPU).
pub fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.workers > 0 {
        runtime.worker_threads(args.workers);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(&args.addr).await?;
    // A refusal reads the request (so closing does not reset the answer away) for one
    // second at most, and at most REFUSALS_QUEUED run at once.
    let refuser = Arc::new(Upgrader {
        handshake_timeout: Some(Duration::from_secs(1)),
        ..upgrader(args)
    });
    let upgrader = Arc::new(upgrader(args));
    let live = Arc::new(Semaphore::new(args.max_conns));
    let refusals = Arc::new(Semaphore::new(REFUSALS_QUEUED));
    let timeouts = Timeouts::new(args);
    println!("listening on {}", listener.local_addr()?);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                // Out of descriptors: let some connections end before trying again.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Ok(permit) = Arc::clone(&live).try_acquire_owned() {
            let (upgrader, timeouts) = (Arc::clone(&upgrader), timeouts.clone());
            tokio::spawn(async move {
                let _permit = permit;
                echo(&upgrader, stream, &timeouts).await;
            });
        } else if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
            let refuser = Arc::clone(&refuser);
            tokio::spawn(async move {
                let _permit = permit;
                let _ = refuser
                    .upgrade_async_with(stream, |_| Err(server_full()))
                    .await;
            });
        } else {
            tracing::warn!("refusals queue full: a connection closed unanswered");
        }
    }
}

async fn echo(upgrader: &Upgrader, stream: TcpStream, timeouts: &Timeouts) {
    let _ = stream.set_nodelay(true);
    let mut conn: AsyncConn<TcpStream> = match upgrader.upgrade_async(stream, &[]).await {
        Ok(conn) => conn,
        Err(err) => {
            tracing::debug!(%err, "handshake refused");
            return;
        }
    };
    conn.set_idle_timeout(Some(timeouts.idle));
    conn.set_write_timeout(Some(timeouts.write));
    let err: Error = loop {
        let result = match conn.read_message().await {
            Ok((message_type, payload)) => conn.write_message(message_type, &payload).await,
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            break err;
        }
    };
    log_end(&err);
    if is_timeout(&err) {
        let close = conn.close_with(CloseCode::GOING_AWAY, "idle");
        let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    }
}
