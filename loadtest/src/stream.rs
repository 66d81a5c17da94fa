//! Streams the server sends on its own (ticks, prices, a backend's events): where each
//! message carries its sequence number and send time ([`StreamSpec`]: JSON fields such as
//! `--seq-field seq --ts-field ts`, or a regex with named groups), and what one
//! subscriber saw of each stream ([`Streams`]): gaps, duplicates, reordering, and the
//! one-way latency from the server's timestamp to the arrival.
//!
//! One-way latency compares the server's clock with this machine's: exact on one host,
//! as good as the clocks' synchronisation across hosts. A timestamp ahead of the arrival
//! (a clock ahead of ours) counts as 0 µs and in `clock_ahead`.
//!
//! JSON messages are scanned without building a document: only the named fields are
//! read (nested ones by a dotted path, `data.seq`), everything else is skipped.

use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::stats::{Arrival, SeqTracker};

/// The most streams (keys) one connection tracks (about 40 bytes each); more are counted
/// in `untracked`.
const MAX_KEYS: usize = 4096;

/// The unit of the server's timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TsUnit {
    /// Told by size, for Unix times of this century: below 10^11 seconds, below 10^14
    /// milliseconds, below 10^17 microseconds, else nanoseconds.
    #[default]
    Auto,
    /// Seconds (a fraction allowed).
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl TsUnit {
    /// Nanoseconds per unit, for a timestamp of `magnitude`.
    fn factor(self, magnitude: f64) -> u64 {
        match self {
            TsUnit::Auto if magnitude < 1e11 => 1_000_000_000,
            TsUnit::Auto if magnitude < 1e14 => 1_000_000,
            TsUnit::Auto if magnitude < 1e17 => 1_000,
            TsUnit::Auto => 1,
            TsUnit::S => 1_000_000_000,
            TsUnit::Ms => 1_000_000,
            TsUnit::Us => 1_000,
            TsUnit::Ns => 1,
        }
    }

    /// `value` in this unit as nanoseconds (integers exactly).
    fn to_ns(self, value: Scalar) -> Option<u64> {
        match value {
            Scalar::Int(i) => i.checked_mul(self.factor(i as f64)),
            Scalar::Float(f) => {
                let ns = f * self.factor(f) as f64;
                (ns.is_finite() && ns >= 0.0 && ns < u64::MAX as f64).then_some(ns as u64)
            }
            Scalar::Other(_) => None,
        }
    }
}

/// Where a message says what it is.
#[derive(Debug, Clone)]
enum Locator {
    /// Dotted paths of JSON fields: sequence number, timestamp, stream key.
    Json([Option<Vec<String>>; 3]),
    /// A regex with the named groups `seq` (required), `ts` and `key`.
    Regex(regex::bytes::Regex),
}

/// How to read a stream's sequence numbers and timestamps out of its messages.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    locator: Locator,
    unit: TsUnit,
}

/// What one message said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Its sequence number.
    pub seq: u64,
    /// Its send time, Unix nanoseconds.
    pub ts_ns: Option<u64>,
    /// A hash of its stream's key (0 without a key field).
    pub key: u64,
}

impl StreamSpec {
    /// JSON messages with these fields (dotted paths for nested ones).
    pub fn json(
        seq: &str,
        ts: Option<&str>,
        key: Option<&str>,
        unit: TsUnit,
    ) -> Result<StreamSpec, String> {
        let path = |what: &str, p: &str| -> Result<Vec<String>, String> {
            let parts: Vec<String> = p.split('.').map(str::to_owned).collect();
            if parts.iter().any(String::is_empty) {
                return Err(format!("{what} {p:?}: an empty name in the path"));
            }
            Ok(parts)
        };
        let paths = [
            Some(path("seq field", seq)?),
            ts.map(|t| path("ts field", t)).transpose()?,
            key.map(|k| path("key field", k)).transpose()?,
        ];
        Ok(StreamSpec {
            locator: Locator::Json(paths),
            unit,
        })
    }

    /// Messages matched by `pattern`, whose named groups `seq` (required), `ts` and `key`
    /// hold the values.
    pub fn regex(pattern: &str, unit: TsUnit) -> Result<StreamSpec, String> {
        let regex =
            regex::bytes::Regex::new(pattern).map_err(|e| format!("regex {pattern:?}: {e}"))?;
        let names: Vec<&str> = regex.capture_names().flatten().collect();
        if !names.contains(&"seq") {
            return Err(format!(
                "regex {pattern:?}: needs a group named seq, as in (?P<seq>\\d+)"
            ));
        }
        Ok(StreamSpec {
            locator: Locator::Regex(regex),
            unit,
        })
    }

    /// Whether the messages carry a timestamp (so latency is measured).
    pub fn has_ts(&self) -> bool {
        match &self.locator {
            Locator::Json(paths) => paths[1].is_some(),
            Locator::Regex(regex) => regex.capture_names().flatten().any(|n| n == "ts"),
        }
    }

    /// What `payload` says, if it is a message of the stream.
    pub fn locate(&self, payload: &[u8]) -> Option<Point> {
        let (seq, ts, key) = match &self.locator {
            Locator::Json(paths) => {
                let mut found = [None, None, None];
                let mut deserializer = serde_json::Deserializer::from_slice(payload);
                Find {
                    paths,
                    depth: 0,
                    mask: 0b111,
                    found: &mut found,
                }
                .deserialize(&mut deserializer)
                .ok()?;
                (found[0]?, found[1], found[2])
            }
            Locator::Regex(regex) => {
                let captures = regex.captures(payload)?;
                let text = |name| captures.name(name).map(|m| Scalar::parse(m.as_bytes()));
                (text("seq")?, text("ts"), text("key"))
            }
        };
        let seq = seq.as_seq()?;
        let ts_ns = ts.and_then(|ts| self.unit.to_ns(ts));
        Some(Point {
            seq,
            ts_ns,
            key: key.map_or(0, Scalar::key),
        })
    }
}

/// A value found in a message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Int(u64),
    Float(f64),
    /// Anything else, by its hash (a key such as a topic's name).
    Other(u64),
}

impl Scalar {
    fn parse(text: &[u8]) -> Scalar {
        let text = String::from_utf8_lossy(text);
        if let Ok(i) = text.parse() {
            Scalar::Int(i)
        } else if let Ok(f) = text.parse() {
            Scalar::Float(f)
        } else {
            Scalar::Other(hash(&text))
        }
    }

    fn as_seq(self) -> Option<u64> {
        match self {
            Scalar::Int(i) => Some(i),
            Scalar::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => {
                Some(f as u64)
            }
            _ => None,
        }
    }

    fn key(self) -> u64 {
        match self {
            Scalar::Int(i) => hash(&i),
            Scalar::Float(f) => hash(&f.to_bits()),
            Scalar::Other(h) => h,
        }
    }
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Reads the wanted paths (`mask` of `paths`) at `depth` of a JSON object.
struct Find<'a> {
    paths: &'a [Option<Vec<String>>; 3],
    depth: usize,
    mask: u8,
    found: &'a mut [Option<Scalar>; 3],
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Find {
            paths,
            depth,
            mask,
            found,
        } = self;
        while let Some(matched) = map.next_key_seed(Key { paths, depth, mask })? {
            let ending = (0..3)
                .filter(|&i| matched & (1 << i) != 0)
                .filter(|&i| paths[i].as_ref().is_some_and(|p| p.len() == depth + 1))
                .fold(0u8, |m, i| m | 1 << i);
            if matched == 0 {
                map.next_value::<IgnoredAny>()?;
            } else if ending != 0 {
                let value = map.next_value_seed(ScalarSeed)?;
                for (i, slot) in found.iter_mut().enumerate() {
                    if ending & (1 << i) != 0 {
                        *slot = value;
                    }
                }
            } else {
                map.next_value_seed(Find {
                    paths,
                    depth: depth + 1,
                    mask: matched,
                    found: &mut *found,
                })?;
            }
        }
        Ok(())
    }
}

/// A key of an object at `depth`: which of the wanted paths go through it.
struct Key<'a> {
    paths: &'a [Option<Vec<String>>; 3],
    depth: usize,
    mask: u8,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = u8;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u8, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = u8;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<u8, E> {
        let mut matched = 0;
        for (i, path) in self.paths.iter().enumerate() {
            if self.mask & (1 << i) != 0
                && path
                    .as_ref()
                    .and_then(|p| p.get(self.depth))
                    .is_some_and(|name| name == key)
            {
                matched |= 1 << i;
            }
        }
        Ok(matched)
    }
}

/// A value where a path ends: a number, or anything else by its hash; an object or an
/// array there is skipped (`None`).
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Option<Scalar>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Option<Scalar>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Scalar::Int(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(match u64::try_from(v) {
            Ok(u) => Scalar::Int(u),
            Err(_) => Scalar::Float(v as f64),
        }))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Scalar::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Scalar::parse(v.as_bytes())))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Scalar::Other(hash(&v))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// What the subscribers saw of their streams, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamCounts {
    /// Stream messages received (duplicates included).
    pub received: u64,
    /// Messages that are not the stream's (no sequence number where it should be).
    pub other: u64,
    /// Times a sequence jumped forward past numbers not received yet.
    pub gaps: u64,
    /// Numbers never received between the first and the last one each subscriber saw
    /// (late arrivals fill gaps and are not missing).
    pub missing: u64,
    /// Numbers received again.
    pub duplicates: u64,
    /// Numbers received after a higher one (late, reordered).
    pub reordered: u64,
    /// Timestamps ahead of the arrival (the server's clock ahead of ours).
    pub clock_ahead: u64,
    /// Messages of streams past the first 4096 of one connection, not checked.
    pub untracked: u64,
}

impl StreamCounts {
    /// Adds another's counts.
    pub fn merge(&mut self, other: &StreamCounts) {
        self.received += other.received;
        self.other += other.other;
        self.gaps += other.gaps;
        self.missing += other.missing;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.clock_ahead += other.clock_ahead;
        self.untracked += other.untracked;
    }
}

/// One stream as one subscriber saw it.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    tracker: SeqTracker,
    /// The lowest number seen.
    low: u64,
    /// Distinct numbers seen.
    distinct: u64,
}

/// The streams of one connection, by key (a connection of a chat room sees one stream
/// per member).
#[derive(Debug, Clone, Default)]
pub struct Streams {
    tracks: HashMap<u64, Track>,
}

impl Streams {
    /// Notes `point`, received at Unix time `arrival_ns`; returns its one-way latency.
    pub fn observe(
        &mut self,
        point: Point,
        arrival_ns: u64,
        counts: &mut StreamCounts,
    ) -> Option<u64> {
        let known = self.tracks.len();
        let track = match self.tracks.entry(point.key) {
            Entry::Occupied(track) => track.into_mut(),
            Entry::Vacant(slot) if known < MAX_KEYS => slot.insert(Track {
                low: point.seq,
                ..Track::default()
            }),
            Entry::Vacant(_) => {
                counts.untracked += 1;
                return None;
            }
        };
        counts.received += 1;
        let first = track.distinct == 0;
        let expected = track.tracker.expected();
        match track.tracker.observe(point.seq) {
            Arrival::InOrder => {
                if !first && point.seq > expected {
                    counts.gaps += 1;
                }
                track.distinct += 1;
            }
            Arrival::Late => {
                counts.reordered += 1;
                track.distinct += 1;
                track.low = track.low.min(point.seq);
            }
            Arrival::Duplicate => counts.duplicates += 1,
        }
        let ts = point.ts_ns?;
        if ts > arrival_ns {
            counts.clock_ahead += 1;
        }
        Some(arrival_ns.saturating_sub(ts))
    }

    /// Adds the numbers never received to `counts` (at the end of the run).
    pub fn finish(&self, counts: &mut StreamCounts) {
        for track in self.tracks.values() {
            let span = track.tracker.expected() - track.low;
            counts.missing += span.saturating_sub(track.distinct);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(seq: &str, ts: Option<&str>, key: Option<&str>) -> StreamSpec {
        StreamSpec::json(seq, ts, key, TsUnit::Auto).unwrap()
    }

    #[test]
    fn json_fields_are_found_at_any_depth_and_order() {
        let spec = json("seq", Some("meta.ts"), Some("topic"));
        let point = spec
            .locate(br#"{"meta":{"x":[1,{"ts":0}],"ts":1700000000123},"topic":"a","seq":42,"big":{"seq":9}}"#)
            .unwrap();
        assert_eq!(point.seq, 42);
        assert_eq!(point.ts_ns, Some(1_700_000_000_123_000_000)); // milliseconds, told by size
        assert_eq!(point.key, Scalar::Other(hash(&"a")).key());
        let other = spec.locate(br#"{"topic":"b","seq":"43"}"#).unwrap();
        assert_eq!(other.seq, 43);
        assert_ne!(other.key, point.key);
        assert_eq!(other.ts_ns, None);
    }

    #[test]
    fn messages_without_a_sequence_number_are_not_the_streams() {
        let spec = json("seq", Some("ts"), None);
        for payload in [
            &b"hello"[..],
            br#"{"type":"join"}"#,
            br#"{"seq":-1}"#,
            br#"{"seq":{"n":1}}"#,
            br#"[1,2]"#,
            br#"{"seq":1"#,
        ] {
            assert_eq!(
                spec.locate(payload),
                None,
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn timestamp_units_are_told_by_size_or_given() {
        let ts = |unit, text: &[u8]| {
            StreamSpec::json("s", Some("t"), None, unit)
                .unwrap()
                .locate(text)
                .unwrap()
                .ts_ns
        };
        assert_eq!(
            ts(TsUnit::Auto, br#"{"s":1,"t":1700000000.5}"#),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            ts(TsUnit::Auto, br#"{"s":1,"t":1700000000000000}"#),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            ts(TsUnit::Auto, br#"{"s":1,"t":1700000000000000000}"#),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(ts(TsUnit::Ms, br#"{"s":1,"t":5}"#), Some(5_000_000));
    }

    #[test]
    fn a_regex_finds_the_groups() {
        let spec =
            StreamSpec::regex(r"tick (?P<key>\w+) #(?P<seq>\d+) @(?P<ts>\d+)", TsUnit::Ns).unwrap();
        let point = spec.locate(b"tick prices #7 @1234").unwrap();
        assert_eq!((point.seq, point.ts_ns), (7, Some(1234)));
        assert!(spec.locate(b"tick prices #x @1").is_none());
        assert!(StreamSpec::regex(r"(?P<ts>\d+)", TsUnit::Ns)
            .unwrap_err()
            .contains("seq"));
    }

    #[test]
    fn gaps_duplicates_and_reordering_are_told_apart() {
        let mut streams = Streams::default();
        let mut counts = StreamCounts::default();
        let point = |seq| Point {
            seq,
            ts_ns: Some(100),
            key: 0,
        };
        // Joined at 10 (not a gap); 13 and 14 jump past 11-12; 12 comes late; 13 twice.
        for seq in [10, 13, 12, 13, 14, 16] {
            assert_eq!(streams.observe(point(seq), 150, &mut counts), Some(50));
        }
        streams.finish(&mut counts);
        assert_eq!(counts.received, 6);
        assert_eq!(counts.gaps, 2); // 10 -> 13, 14 -> 16
        assert_eq!(counts.missing, 2); // 11 and 15
        assert_eq!(counts.duplicates, 1);
        assert_eq!(counts.reordered, 1);
    }

    #[test]
    fn streams_are_kept_apart_by_key_and_clock_skew_is_counted() {
        let mut streams = Streams::default();
        let mut counts = StreamCounts::default();
        for (key, seq) in [(1, 0), (2, 5), (1, 1), (2, 6)] {
            streams.observe(
                Point {
                    seq,
                    ts_ns: Some(200),
                    key,
                },
                100,
                &mut counts,
            );
        }
        streams.finish(&mut counts);
        assert_eq!((counts.gaps, counts.missing, counts.duplicates), (0, 0, 0));
        assert_eq!(counts.clock_ahead, 4);
    }
}
