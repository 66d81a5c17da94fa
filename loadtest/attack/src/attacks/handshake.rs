//! Attacks on the opening handshake and on connections as such.

use std::io::Write;
use std::time::{Duration, Instant};

use super::{in_parallel, Ctx, Outcome};
use crate::wire::{self, Client, Ending, Tally};

/// Connections that start a request and add one byte every 100 ms, never finishing it.
pub fn slowloris(ctx: &Ctx) -> Outcome {
    let n = ctx.count(200);
    let mut clients: Vec<Client> = (0..n)
        .filter_map(|_| Client::connect(ctx.addr, ctx.io_timeout).ok())
        .collect();
    let opened = clients.len();
    for client in &mut clients {
        let _ = client.send(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
    }
    let deadline = ctx.deadline();
    let mut cut = 0;
    while Instant::now() < deadline {
        clients.retain_mut(|client| {
            let alive = client.send(b"a").is_ok();
            cut += usize::from(!alive);
            alive
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    Outcome::note(format!(
        "{opened} opened, {cut} cut by the server within {:?}, {} still open",
        ctx.seconds,
        clients.len()
    ))
}

/// Sends a request head whose body is `filler` (after the usual headers), then reads the
/// answer.
fn oversized_head(ctx: &Ctx, filler: &[u8]) -> Ending {
    let Ok(mut client) = Client::connect(ctx.addr, ctx.io_timeout) else {
        return Ending::Reset;
    };
    let mut head = wire::request(&ctx.path("heads"), "");
    head.truncate(head.len() - 2); // the blank line goes after the filler
    if client.send(&head).is_err() {
        return Ending::Reset;
    }
    // Written in pieces: the server may answer and close long before the end.
    for piece in filler.chunks(64 * 1024) {
        if client.send(piece).is_err() {
            break;
        }
    }
    let _ = client.send(b"\r\n\r\n");
    match client.read_head() {
        Ok(101) => client.ending(Duration::from_millis(100)),
        Ok(status) => Ending::Refused(status),
        Err(err) => wire::ending_of(&err),
    }
}

/// Requests with one header line of 1 MiB.
pub fn huge_headers(ctx: &Ctx) -> Outcome {
    let mut filler = b"X-Huge: ".to_vec();
    filler.resize(1 << 20, b'a');
    filler.extend_from_slice(b"\r\n");
    let mut tally = Tally::default();
    for ending in in_parallel(ctx.count(32), 4, |_| oversized_head(ctx, &filler)) {
        tally.add(ending);
    }
    Outcome::note(tally.to_string())
}

/// Requests with 10 000 headers.
pub fn many_headers(ctx: &Ctx) -> Outcome {
    let filler: Vec<u8> = (0..10_000)
        .flat_map(|i| format!("X-H{i}: v\r\n").into_bytes())
        .collect();
    let mut tally = Tally::default();
    for ending in in_parallel(ctx.count(32), 4, |_| oversized_head(ctx, &filler)) {
        tally.add(ending);
    }
    Outcome::note(tally.to_string())
}

/// Handshakes with extension offers that are malformed, repeated or endless; each one
/// accepted is then closed cleanly, to see that the connection works.
pub fn bad_extension_offers(ctx: &Ctx) -> Outcome {
    let endless = format!(
        "Sec-WebSocket-Extensions: {}\r\n",
        vec!["permessage-deflate; client_max_window_bits"; 300].join(", ")
    );
    let offers: Vec<String> = [
        "permessage-deflate; server_max_window_bits=99",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; x-unknown=1",
        ";;;,,,permessage-deflate=;",
        "permessage-deflate; server_max_window_bits",
        "x-webkit-deflate-frame",
    ]
    .iter()
    .map(|offer| format!("Sec-WebSocket-Extensions: {offer}\r\n"))
    .chain([endless])
    .collect();
    let mut tally = Tally::default();
    let endings = in_parallel(offers.len() * 10, 4, |i| {
        let mut client = Client::connect(ctx.addr, ctx.io_timeout)?;
        client.send(&wire::request(
            &ctx.path("offers"),
            &offers[i % offers.len()],
        ))?;
        match client.read_head()? {
            101 => {
                let mut close = Vec::new();
                wire::frame_into(&mut close, wire::CLOSE, true, false, &1000u16.to_be_bytes());
                client.send(&close)?;
                Ok(client.ending(ctx.io_timeout))
            }
            status => Ok(Ending::Refused(status)),
        }
    });
    for ending in endings {
        tally.add(ending.unwrap_or_else(|err: std::io::Error| wire::ending_of(&err)));
    }
    let fault = (tally.count(Ending::Closed(1000)) + refused(&tally) != tally.total())
        .then(|| format!("not a clean close or a refusal: {tally}"));
    Outcome {
        note: tally.to_string(),
        fault,
    }
}

/// How many of a tally got an HTTP answer other than 101.
fn refused(tally: &Tally) -> usize {
    (100..600)
        .map(|status| tally.count(Ending::Refused(status)))
        .sum()
}

/// Connections that send nothing at all, held for the flood's time.
pub fn half_open_flood(ctx: &Ctx) -> Outcome {
    let n = ctx.count(1000);
    let mut clients: Vec<Client> = in_parallel(n, 4, |_| Client::connect(ctx.addr, ctx.io_timeout))
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let opened = clients.len();
    std::thread::sleep(ctx.seconds);
    // Whoever the server let go of in the meantime reads as ended now.
    let tally = wire::tally_now(&mut clients);
    Outcome::note(format!("{opened} held {:?}: {tally}", ctx.seconds))
}

/// Connect, upgrade and close as fast as 4 threads can, up to 5000 times.
pub fn connect_close_churn(ctx: &Ctx) -> Outcome {
    let deadline = ctx.deadline();
    let per_thread = 1250;
    let counts = in_parallel(4, 4, |_| {
        let (mut done, mut failed) = (0, 0);
        for _ in 0..per_thread {
            if Instant::now() >= deadline {
                break;
            }
            let churned = Client::upgrade(ctx.addr, &ctx.path("churn"), "", ctx.io_timeout)
                .and_then(|mut client| {
                    let mut close = Vec::new();
                    wire::frame_into(&mut close, wire::CLOSE, true, false, &1000u16.to_be_bytes());
                    client.stream.write_all(&close)
                });
            match churned {
                Ok(()) => done += 1,
                Err(_) => failed += 1,
            }
        }
        (done, failed)
    });
    let done: usize = counts.iter().map(|c| c.0).sum();
    let failed: usize = counts.iter().map(|c| c.1).sum();
    Outcome::note(format!("{done} connections churned, {failed} failed"))
}
