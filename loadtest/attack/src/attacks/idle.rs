//! What a connection keeps after one big message: clients send a 900 KiB message each,
//! read the echo, and idle while the server's memory is watched.

use super::{in_parallel, Ctx, Outcome};
use crate::wire::{self, Client, Tally};

/// The size of the big message (the measurement used 900 KiB).
const BIG: usize = 900 * 1024;

/// Text that compresses about as well as prose: words drawn from a small list by a fixed
/// pseudo-random sequence.
fn prose(len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "the",
        "server",
        "keeps",
        "little",
        "memory",
        "after",
        "a",
        "large",
        "message",
        "while",
        "its",
        "connection",
        "idles",
        "quietly",
        "between",
        "frames",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(WORDS[(state % 16) as usize].as_bytes());
        out.push(if state.is_multiple_of(11) {
            b'\n'
        } else {
            b' '
        });
    }
    out.truncate(len);
    out
}

/// Sends the big message, reads its echo; the client, and whether compression was agreed.
fn one_big(ctx: &Ctx, message: &[u8], compress: bool) -> std::io::Result<(Client, bool)> {
    let offer = if compress {
        "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    } else {
        ""
    };
    let mut client = Client::upgrade(ctx.addr, &ctx.path("big"), offer, ctx.io_timeout)?;
    let compressed = client.compressed();
    let mut bytes = Vec::with_capacity(message.len() + 14);
    if compressed {
        let mut deflater =
            ringcast::proto::deflate::Deflater::new(1).map_err(std::io::Error::other)?;
        let mut payload = Vec::new();
        deflater.compress(message, &mut payload);
        wire::frame_into(&mut bytes, wire::TEXT, true, true, &payload);
    } else {
        wire::frame_into(&mut bytes, wire::TEXT, true, false, message);
    }
    client.send(&bytes)?;
    // The echo (compressed or not, it is one data frame or several; read until one ends).
    loop {
        let frame = client.read_frame()?;
        if frame.opcode == wire::CLOSE {
            return Err(std::io::Error::other("closed instead of echoing"));
        }
        if matches!(frame.opcode, wire::TEXT | wire::CONTINUATION) && frame.fin {
            return Ok((client, compressed));
        }
    }
}

fn idle_after_big(ctx: &Ctx, compress: bool) -> Outcome {
    if ctx.max_message < BIG {
        return Outcome::note(format!(
            "not run: the server's limit ({} B) is below 900 KiB",
            ctx.max_message
        ));
    }
    let message = prose(BIG);
    let results = in_parallel(ctx.count(100), 4, |_| one_big(ctx, &message, compress));
    let mut failed = Tally::default();
    let mut clients = Vec::new();
    let mut compressed = 0;
    for result in results {
        match result {
            Ok((client, agreed)) => {
                compressed += usize::from(agreed);
                clients.push(client);
            }
            Err(err) => failed.add(wire::ending_of(&err)),
        }
    }
    std::thread::sleep(ctx.seconds);
    let tally = wire::tally_now(&mut clients);
    Outcome::note(format!(
        "{} echoed ({compressed} compressed) then idled {:?}: {tally}; failed: {failed}",
        clients.len(),
        ctx.seconds
    ))
}

/// Idle after a big compressed message.
pub fn big_compressed(ctx: &Ctx) -> Outcome {
    idle_after_big(ctx, true)
}

/// Idle after a big plain message.
pub fn big_plain(ctx: &Ctx) -> Outcome {
    idle_after_big(ctx, false)
}
