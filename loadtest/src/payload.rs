//! The messages `fanout` and `echo` send: a [`Stamp`] (who sent it, its number, when it
//! was meant to be sent) and a filler that brings it to the size asked for. The filler is
//! what compression works on, so it matters for `--compress` figures:
//!
//! - `pad`: `x` repeated. Deflate shrinks it to almost nothing, which flatters every
//!   server's compressed figures; kept as the default for comparisons with earlier runs.
//! - `random`: random letters, digits, `-` and `_` (6 bits each): compresses to about 3/4,
//!   like tokens and ids.
//! - samples from a file (`--payload-file`): one line per message, chosen at random: real
//!   chat lines or JSON documents compress as they would in production. The size is then
//!   the line's.

use std::io::Write as _;
use std::sync::Arc;

use crate::data::Samples;
use crate::template::random_text;

/// What follows the stamp.
#[derive(Debug, Clone)]
pub enum Filler {
    /// `x` up to the size.
    Pad,
    /// Random text up to the size.
    Random,
    /// A line of the file, whatever the size.
    Samples(Arc<Samples>),
}

/// How the messages of a run are made.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The size of each message, stamp included (pad and random).
    pub size: usize,
    /// What follows the stamp.
    pub filler: Filler,
}

impl Payload {
    /// Replaces `out` with `stamp` and the filler.
    pub fn write(&self, stamp: &Stamp, rng: &mut fastrand::Rng, out: &mut Vec<u8>) {
        stamp.write(out);
        match &self.filler {
            Filler::Pad | Filler::Random if out.len() >= self.size => {}
            Filler::Pad => {
                out.push(b' ');
                out.resize(self.size.max(out.len()), b'x');
            }
            Filler::Random => {
                out.push(b' ');
                let len = self.size.saturating_sub(out.len());
                random_text(rng, len, out);
            }
            Filler::Samples(samples) => {
                out.push(b' ');
                out.extend_from_slice(samples.pick(rng).as_bytes());
            }
        }
    }

    /// The filler's name for the report: `pad`, `random` or `samples`.
    pub fn kind(&self) -> &'static str {
        match self.filler {
            Filler::Pad => "pad",
            Filler::Random => "random",
            Filler::Samples(_) => "samples",
        }
    }
}

/// What each message the load generator sends says about itself: who sent it, its
/// number in that sender's sequence, and when it was (meant to be) sent.
///
/// On the wire it is one line of text, `p=3 s=1234 t=5678`, then a space and the
/// [`Payload`]'s filler: `p=3 s=1234 t=5678 xxxxxxxx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sender: publisher id, or connection index for echo.
    pub sender: u32,
    /// The sender's sequence number, from 0.
    pub seq: u64,
    /// Send time, in nanoseconds on [`now_ns`](crate::client::now_ns)'s clock.
    pub time: u64,
}

impl Stamp {
    /// Replaces `out` with this stamp alone.
    fn write(&self, out: &mut Vec<u8>) {
        out.clear();
        let _ = write!(out, "p={} s={} t={}", self.sender, self.seq, self.time);
    }

    /// Whether `line` starts the way this load generator's messages do (so one that does
    /// not parse was mangled, rather than being the server's own).
    pub fn looks_like_one(line: &[u8]) -> bool {
        line.starts_with(b"p=")
    }

    /// The stamp at the start of `line`, if it is one of ours.
    pub fn parse(line: &[u8]) -> Option<Stamp> {
        let rest = line.strip_prefix(b"p=")?;
        let (sender, rest) = number(rest)?;
        let (seq, rest) = number(rest.strip_prefix(b" s=")?)?;
        let (time, rest) = number(rest.strip_prefix(b" t=")?)?;
        if !(rest.is_empty() || rest[0] == b' ') {
            return None;
        }
        Some(Stamp {
            sender: u32::try_from(sender).ok()?,
            seq,
            time,
        })
    }
}

/// A decimal number at the start of `bytes`, and what follows it.
fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in &bytes[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, &bytes[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pad(size: usize) -> Payload {
        Payload {
            size,
            filler: Filler::Pad,
        }
    }

    #[test]
    fn stamp_is_padded_to_the_size_and_parses_back() {
        let stamp = Stamp {
            sender: 3,
            seq: 1234,
            time: 5678,
        };
        let mut out = Vec::new();
        pad(64).write(&stamp, &mut fastrand::Rng::with_seed(1), &mut out);
        assert_eq!(out.len(), 64);
        assert!(out.starts_with(b"p=3 s=1234 t=5678 xxx"));
        assert_eq!(Stamp::parse(&out), Some(stamp));
    }

    #[test]
    fn stamp_longer_than_the_size_is_sent_whole() {
        let stamp = Stamp {
            sender: 1,
            seq: 2,
            time: 3,
        };
        let mut out = Vec::new();
        pad(4).write(&stamp, &mut fastrand::Rng::with_seed(1), &mut out);
        assert_eq!(out, b"p=1 s=2 t=3");
        assert_eq!(Stamp::parse(&out), Some(stamp));
    }

    #[test]
    fn foreign_lines_are_not_stamps() {
        for line in [
            &b""[..],
            b"hello",
            b"p=1 s=2",
            b"p=1 s=2 t=",
            b"p=1 s=2 t=3x",
            b"p=99999999999 s=1 t=1",
            b"p=1 s=99999999999999999999999 t=1",
        ] {
            assert_eq!(
                Stamp::parse(line),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn random_filler_reaches_the_size_and_compresses_less_than_padding() {
        let stamp = Stamp {
            sender: 0,
            seq: 1,
            time: 2,
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let random = Payload {
            size: 1000,
            filler: Filler::Random,
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        random.write(&stamp, &mut rng, &mut a);
        random.write(&stamp, &mut rng, &mut b);
        assert_eq!(a.len(), 1000);
        assert_ne!(a, b, "a new filler per message");
        assert_eq!(Stamp::parse(&a), Some(stamp));
        let distinct = a[12..]
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len();
        assert!(distinct > 50, "{distinct} distinct bytes");
    }

    #[test]
    fn samples_follow_the_stamp_whatever_the_size() {
        let samples = Arc::new(Samples::parse("{\"text\":\"hi there\"}\n").unwrap());
        let payload = Payload {
            size: 4,
            filler: Filler::Samples(samples),
        };
        let stamp = Stamp {
            sender: 2,
            seq: 3,
            time: 4,
        };
        let mut out = Vec::new();
        payload.write(&stamp, &mut fastrand::Rng::with_seed(1), &mut out);
        assert_eq!(out, b"p=2 s=3 t=4 {\"text\":\"hi there\"}");
        assert_eq!(Stamp::parse(&out), Some(stamp));
    }
}
