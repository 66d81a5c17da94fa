//! Attacks with frames: impossible lengths, fragments without end, protocol violations,
//! floods, resets, and messages held just below the limit.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{in_parallel, Ctx, Outcome};
use crate::wire::{self, Client, Ending, Tally};

/// Upgrades `n` clients at `path` on 4 threads; those that got a 101.
fn upgraded(ctx: &Ctx, n: usize, room: &str, extra: &str) -> Vec<Client> {
    in_parallel(n, 4, |_| {
        Client::upgrade(ctx.addr, &ctx.path(room), extra, ctx.io_timeout)
    })
    .into_iter()
    .filter_map(Result::ok)
    .collect()
}

/// Sends `bytes(i)` on each of `n` fresh connections and tallies how each ended.
fn send_and_tally(ctx: &Ctx, n: usize, bytes: impl Fn(usize) -> Vec<u8> + Sync) -> Tally {
    let endings = in_parallel(n, 4, |i| {
        let mut client = match Client::upgrade(ctx.addr, &ctx.path("frames"), "", ctx.io_timeout) {
            Ok(client) => client,
            Err(err) => return wire::ending_of(&err),
        };
        if let Err(err) = client.send(&bytes(i)) {
            return wire::ending_of(&err);
        }
        client.ending(ctx.io_timeout)
    });
    let mut tally = Tally::default();
    for ending in endings {
        tally.add(ending);
    }
    tally
}

/// Frames announcing 2^63-1 bytes (the largest length RFC 6455 allows) and 2^64-1 (with
/// the most significant bit set, which it forbids), followed by some payload.
pub fn length_2_63(ctx: &Ctx) -> Outcome {
    let tally = send_and_tally(ctx, ctx.count(100), |i| {
        let len = if i % 2 == 0 { u64::MAX >> 1 } else { u64::MAX };
        let mut bytes = wire::header(0x82, len, true);
        bytes.extend_from_slice(&[0x55; 1024]);
        bytes
    });
    Outcome::note(tally.to_string())
}

/// Messages whose fragments never end: half send 16 KiB continuations until the server
/// stops them, half send empty continuations (which never reach any limit) for the whole
/// flood.
pub fn endless_fragments(ctx: &Ctx) -> Outcome {
    let deadline = ctx.deadline();
    let endings = in_parallel(8, 8, |i| {
        let mut client = match Client::upgrade(ctx.addr, &ctx.path("fragments"), "", ctx.io_timeout)
        {
            Ok(client) => client,
            Err(err) => return (wire::ending_of(&err), 0u64),
        };
        let mut first = Vec::new();
        wire::frame_into(&mut first, wire::BINARY, false, false, &[1; 1024]);
        let mut batch = Vec::new();
        if i % 2 == 0 {
            wire::frame_into(
                &mut batch,
                wire::CONTINUATION,
                false,
                false,
                &[2; 16 * 1024],
            );
        } else {
            for _ in 0..2000 {
                wire::frame_into(&mut batch, wire::CONTINUATION, false, false, &[]);
            }
        }
        let mut sent = first.len() as u64;
        if let Err(err) = client.send(&first) {
            return (wire::ending_of(&err), sent);
        }
        while Instant::now() < deadline {
            if let Err(err) = client.send(&batch) {
                // Cut off: see how (a close frame may be waiting).
                let ending = match client.ending(Duration::from_millis(200)) {
                    Ending::Open => wire::ending_of(&err),
                    ending => ending,
                };
                return (ending, sent);
            }
            sent += batch.len() as u64;
        }
        (client.ended_now(), sent)
    });
    let mut tally = Tally::default();
    for (ending, _) in &endings {
        tally.add(*ending);
    }
    let sent: u64 = endings.iter().map(|(_, sent)| sent).sum();
    Outcome::note(format!("{} MiB sent: {tally}", sent >> 20))
}

/// A text frame without a mask (RFC 6455 section 5.1: the server must fail it).
pub fn unmasked(ctx: &Ctx) -> Outcome {
    let tally = send_and_tally(ctx, ctx.count(200), |_| b"\x81\x05Hello".to_vec());
    Outcome::note(tally.to_string())
}

/// Text that is not UTF-8, in one frame or with a code point cut by a fragment boundary
/// and never completed.
pub fn bad_utf8(ctx: &Ctx) -> Outcome {
    let tally = send_and_tally(ctx, ctx.count(200), |i| {
        let mut bytes = Vec::new();
        if i % 2 == 0 {
            wire::frame_into(&mut bytes, wire::TEXT, true, false, b"ok \xce\xbb \xff\xfe");
        } else {
            wire::frame_into(&mut bytes, wire::TEXT, false, false, b"half \xce");
            wire::frame_into(&mut bytes, wire::CONTINUATION, true, false, b"A");
        }
        bytes
    });
    Outcome::note(tally.to_string())
}

/// A compressed message that inflates to 64 MiB of zeros (about 64 KiB on the wire).
fn bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let mut deflater = ringcast::proto::deflate::Deflater::new(9).expect("level 9");
        let mut out = Vec::new();
        deflater.compress(&vec![0u8; 64 << 20], &mut out);
        out
    })
}

/// Clients offering permessage-deflate send bombs, reconnecting after each refusal.
pub fn deflate_bomb(ctx: &Ctx) -> Outcome {
    let mut bytes = Vec::new();
    wire::frame_into(&mut bytes, wire::BINARY, true, true, bomb());
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let deadline = ctx.deadline();
    let results = in_parallel(4, 4, |_| {
        let (mut tally, mut plain) = (Tally::default(), 0);
        while Instant::now() < deadline {
            let mut client =
                match Client::upgrade(ctx.addr, &ctx.path("bombs"), offer, ctx.io_timeout) {
                    Ok(client) => client,
                    Err(err) => {
                        tally.add(wire::ending_of(&err));
                        continue;
                    }
                };
            plain += usize::from(!client.compressed());
            // The answer may take a while (inflating up to the limit): past the flood's
            // end, 2 s at most.
            let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(2);
            tally.add(match client.send(&bytes) {
                Ok(()) => client.ending(wait.min(ctx.io_timeout)),
                Err(err) => wire::ending_of(&err),
            });
        }
        (tally, plain)
    });
    let mut tally = Tally::default();
    let mut plain = 0;
    for (part, refused) in results {
        plain += refused;
        tally.merge(&part);
    }
    let note = if plain > 0 {
        format!(
            "{} bombs: {tally} ({plain} without compression agreed)",
            tally.total()
        )
    } else {
        format!("{} bombs: {tally}", tally.total())
    };
    Outcome::note(note)
}

/// Clients sending 125-byte pings as fast as they can, reading nothing.
pub fn ping_flood(ctx: &Ctx) -> Outcome {
    let mut batch = Vec::new();
    for _ in 0..1000 {
        wire::frame_into(&mut batch, wire::PING, true, false, &[0x70; 125]);
    }
    let (tally, batches) = super::flood_unread(ctx, "pings", 8, &batch);
    let pings = batches * 1000;
    Outcome::note(format!("{pings} pings: {tally}"))
}

/// Clients that stop in the middle of a frame and reset the connection (closing a socket
/// with unread bytes in it makes the kernel send RST).
pub fn reset_mid_frame(ctx: &Ctx) -> Outcome {
    let n = ctx.count(200);
    let resets = in_parallel(n, 4, |_| {
        let mut client = Client::connect(ctx.addr, ctx.io_timeout).ok()?;
        let mut bytes = wire::request(&ctx.path("resets"), "");
        bytes.extend_from_slice(&wire::header(0x82, 64 * 1024, true));
        bytes.extend_from_slice(&[0x33; 1024]);
        client.send(&bytes).ok()?;
        // Wait until the 101 is in the socket, unread: then dropping it resets.
        let mut peek = [0u8; 1];
        client.stream.peek(&mut peek).ok()?;
        Some(())
    });
    let done = resets.iter().flatten().count();
    Outcome::note(format!("{done} of {n} reset mid-frame"))
}

/// Clients that send 200 messages and a close in the same write as the handshake; every
/// message must come back (echo and chat), in order, before the close.
pub fn pipelined(ctx: &Ctx) -> Outcome {
    let messages = 200;
    let results = in_parallel(ctx.count(20), 4, |i| {
        let room = format!("pipe{i}");
        let mut bytes = wire::request(&ctx.path(&room), "");
        for m in 0..messages {
            let payload = match ctx.kind {
                super::Kind::Pubsub => format!("+p{m}"),
                _ => format!("message {m}"),
            };
            wire::frame_into(&mut bytes, wire::TEXT, true, false, payload.as_bytes());
        }
        wire::frame_into(&mut bytes, wire::CLOSE, true, false, &1000u16.to_be_bytes());
        let mut client = Client::connect(ctx.addr, ctx.io_timeout)?;
        client.send(&bytes)?;
        if client.read_head()? != 101 {
            return Ok((0, Ending::Refused(0)));
        }
        let mut next = 0;
        loop {
            let frame = match client.read_frame() {
                Ok(frame) => frame,
                Err(err) => return Ok((next, wire::ending_of(&err))),
            };
            match frame.opcode {
                wire::CLOSE => {
                    let code = frame
                        .payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    return Ok((next, Ending::Closed(code)));
                }
                wire::TEXT if frame.payload == format!("message {next}").as_bytes() => next += 1,
                _ => {} // the chat's join notice
            }
        }
    });
    let expected = match ctx.kind {
        super::Kind::Pubsub => 0,
        _ => messages,
    };
    let mut tally = Tally::default();
    let mut short = 0;
    for result in &results {
        match result {
            Ok((got, ending)) => {
                tally.add(*ending);
                short += usize::from(*got != expected);
            }
            Err(err) => {
                tally.add(wire::ending_of(err));
                short += 1;
            }
        }
    }
    let note = format!(
        "{} clients, {expected} messages each: {tally}",
        results.len()
    );
    let fault = (short > 0 || tally.count(Ending::Closed(1000)) != results.len())
        .then(|| format!("{short} clients did not get every message back in order ({tally})"));
    Outcome { note, fault }
}

/// Messages stopped 1 KiB short of the read limit, held open for the flood's time.
pub fn large_unfinished(ctx: &Ctx) -> Outcome {
    let size = ctx.max_message.saturating_sub(1024).max(1);
    let mut clients = upgraded(ctx, ctx.count(16), "unfinished", "");
    let payload = vec![0x41; size];
    let mut sent = 0;
    for client in &mut clients {
        let mut bytes = Vec::with_capacity(size + 14);
        wire::frame_into(&mut bytes, wire::BINARY, false, false, &payload);
        sent += usize::from(client.send(&bytes).is_ok());
    }
    std::thread::sleep(ctx.seconds);
    let tally = wire::tally_now(&mut clients);
    Outcome::note(format!(
        "{sent} messages of {} KiB held {:?}: {tally}",
        size >> 10,
        ctx.seconds
    ))
}
