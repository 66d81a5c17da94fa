//! Text with placeholders, filled in per connection or per message: the URL and header
//! templates of every subcommand and the messages of a scenario file.
//!
//! | placeholder | value |
//! | --- | --- |
//! | `{n}` | the connection's number: 0, 1, 2... in the order they are dialed |
//! | `{seq}` | the message's number on its connection: 0, 1, 2... |
//! | `{ts_s}` `{ts_ms}` `{ts_us}` `{ts_ns}` | Unix time now, in that unit |
//! | `{random:N}` | N random characters (letters, digits, `-`, `_`) |
//! | `{bytes:N}` | N random bytes (binary messages only) |
//! | `{sample}` | a line of the samples file, chosen at random per message |
//! | `{COLUMN}` | the data file's value in that column, row `n % rows` |
//!
//! `{{` and `}}` stand for braces. A template is parsed once, with every name checked,
//! and filled without parsing again.

use std::fmt;

use crate::client::unix_ns;
use crate::data::{DataTable, Samples};

/// The longest `{random:N}` or `{bytes:N}`: a typo must not allocate gigabytes per message.
const MAX_RANDOM: usize = 16 << 20;

/// A value a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    N,
    Seq,
    /// Unix time in units of this many nanoseconds.
    Now(u64),
    Random(usize),
    Bytes(usize),
    Sample,
    Column(usize),
}

impl Field {
    /// Whether the value is a number (so a JSON string holding only it becomes a number).
    fn is_number(self) -> bool {
        matches!(self, Field::N | Field::Seq | Field::Now(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Box<[u8]>),
    /// A value, JSON-escaped when `json` (inside a JSON string).
    Value {
        field: Field,
        json: bool,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

/// What the names of a template may refer to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Names<'a> {
    /// The data file's columns.
    pub columns: &'a [String],
    /// Whether there is a samples file (for `{sample}`).
    pub samples: bool,
    /// Whether `{bytes:N}` is allowed (binary messages).
    pub binary: bool,
}

/// What a template is filled with.
#[derive(Debug)]
pub struct Fill<'a> {
    /// The connection's number.
    pub n: u64,
    /// The message's number on its connection.
    pub seq: u64,
    /// The data file, if any.
    pub data: Option<&'a DataTable>,
    /// The samples file, if any.
    pub samples: Option<&'a Samples>,
    /// Random values.
    pub rng: &'a mut fastrand::Rng,
}

impl Template {
    /// Parses `text`, checking every placeholder against `names`.
    pub fn parse(text: &str, names: &Names<'_>) -> Result<Template, String> {
        let mut template = Template::default();
        template.push_text(text, names, false)?;
        Ok(template)
    }

    /// Compiles a TOML value into a template of its JSON text. Strings may hold
    /// placeholders (their values are escaped); a string that is only `{n}`, `{seq}` or a
    /// `{ts_*}` becomes a JSON number.
    pub fn json(value: &toml::Value, names: &Names<'_>) -> Result<Template, String> {
        let mut template = Template::default();
        template.push_json(value, names)?;
        Ok(template)
    }

    /// Appends the filled-in text to `out`.
    pub fn fill(&self, with: &mut Fill<'_>, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.extend_from_slice(text),
                Part::Value { field, json } => fill_field(*field, *json, with, out),
            }
        }
    }

    /// The filled-in text as a `String` (for URLs and headers, whose fields are text).
    pub fn fill_string(&self, with: &mut Fill<'_>) -> String {
        let mut out = Vec::new();
        self.fill(with, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn push_literal(&mut self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        if let Some(Part::Text(last)) = self.parts.last_mut() {
            let mut joined = last.to_vec();
            joined.extend_from_slice(text);
            *last = joined.into_boxed_slice();
        } else {
            self.parts.push(Part::Text(text.into()));
        }
    }

    /// Parses `text` into parts; with `json`, literal text is JSON-escaped and values are
    /// marked for escaping (the caller adds the quotes).
    fn push_text(&mut self, text: &str, names: &Names<'_>, json: bool) -> Result<(), String> {
        let mut literal = String::new();
        let mut rest = text;
        let flush = |template: &mut Template, literal: &mut String| {
            let bytes = if json {
                json_escaped(literal)
            } else {
                literal.as_bytes().to_vec()
            };
            template.push_literal(&bytes);
            literal.clear();
        };
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let brace = rest.as_bytes()[i];
            rest = &rest[i + 1..];
            if brace == b'}' {
                match rest.strip_prefix('}') {
                    Some(after) => {
                        literal.push('}');
                        rest = after;
                    }
                    None => return Err(format!("{text:?}: a lone '}}' (write '}}}}')")),
                }
                continue;
            }
            if let Some(after) = rest.strip_prefix('{') {
                literal.push('{');
                rest = after;
                continue;
            }
            let end = rest
                .find('}')
                .ok_or_else(|| format!("{text:?}: '{{' without its '}}'"))?;
            let field = field(&rest[..end], names).map_err(|e| format!("{text:?}: {e}"))?;
            rest = &rest[end + 1..];
            flush(self, &mut literal);
            self.parts.push(Part::Value { field, json });
        }
        literal.push_str(rest);
        flush(self, &mut literal);
        Ok(())
    }

    fn push_json(&mut self, value: &toml::Value, names: &Names<'_>) -> Result<(), String> {
        match value {
            toml::Value::String(text) => {
                let lone = Template::parse(text, names)?;
                if let [Part::Value { field, .. }] = lone.parts.as_slice() {
                    if field.is_number() {
                        self.parts.push(Part::Value {
                            field: *field,
                            json: false,
                        });
                        return Ok(());
                    }
                }
                self.push_literal(b"\"");
                self.push_text(text, names, true)?;
                self.push_literal(b"\"");
            }
            toml::Value::Integer(i) => self.push_literal(i.to_string().as_bytes()),
            toml::Value::Float(f) => {
                let number = serde_json::Number::from_f64(*f)
                    .ok_or_else(|| format!("{f} has no JSON form"))?;
                self.push_literal(number.to_string().as_bytes());
            }
            toml::Value::Boolean(b) => self.push_literal(b.to_string().as_bytes()),
            toml::Value::Datetime(d) => {
                self.push_literal(format!("\"{d}\"").as_bytes());
            }
            toml::Value::Array(items) => {
                self.push_literal(b"[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.push_literal(b",");
                    }
                    self.push_json(item, names)?;
                }
                self.push_literal(b"]");
            }
            toml::Value::Table(table) => {
                self.push_literal(b"{");
                for (i, (key, item)) in table.iter().enumerate() {
                    if i > 0 {
                        self.push_literal(b",");
                    }
                    self.push_literal(b"\"");
                    self.push_literal(&json_escaped(key));
                    self.push_literal(b"\":");
                    self.push_json(item, names)?;
                }
                self.push_literal(b"}");
            }
        }
        Ok(())
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(text) => f.write_str(&String::from_utf8_lossy(text))?,
                Part::Value { field, .. } => write!(f, "{{{field:?}}}")?,
            }
        }
        Ok(())
    }
}

/// The field a placeholder's name stands for.
fn field(name: &str, names: &Names<'_>) -> Result<Field, String> {
    let sized = |what: &str, count: &str| -> Result<usize, String> {
        match count.parse::<usize>() {
            Ok(n) if n <= MAX_RANDOM => Ok(n),
            _ => Err(format!(
                "{{{what}:{count}}}: give a length from 0 to {MAX_RANDOM}"
            )),
        }
    };
    Ok(match name {
        "n" => Field::N,
        "seq" => Field::Seq,
        "ts_s" => Field::Now(1_000_000_000),
        "ts_ms" => Field::Now(1_000_000),
        "ts_us" => Field::Now(1_000),
        "ts_ns" => Field::Now(1),
        "sample" if names.samples => Field::Sample,
        "sample" => return Err("{sample} needs a samples file".into()),
        _ => {
            if let Some(count) = name.strip_prefix("random:") {
                Field::Random(sized("random", count)?)
            } else if let Some(count) = name.strip_prefix("bytes:") {
                if !names.binary {
                    return Err(format!(
                        "{{{name}}}: random bytes only go in binary messages"
                    ));
                }
                Field::Bytes(sized("bytes", count)?)
            } else if let Some(column) = names.columns.iter().position(|c| c == name) {
                Field::Column(column)
            } else {
                let columns = if names.columns.is_empty() {
                    "no data file is given".to_owned()
                } else {
                    format!("the data file's columns are {}", names.columns.join(", "))
                };
                return Err(format!(
                    "unknown placeholder {{{name}}}: known are n, seq, ts_s, ts_ms, ts_us, \
                     ts_ns, random:N, bytes:N, sample; {columns}"
                ));
            }
        }
    })
}

/// Characters of `{random:N}`: 64 of them, 6 bits each, so such text compresses about as
/// far as random tokens and ids do (to about 3/4), not to nothing like padding.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Appends `len` random characters of [`ALPHABET`].
pub fn random_text(rng: &mut fastrand::Rng, len: usize, out: &mut Vec<u8>) {
    out.reserve(len);
    let mut left = len;
    while left > 0 {
        let mut bits = rng.u64(..);
        for _ in 0..left.min(10) {
            out.push(ALPHABET[(bits & 63) as usize]);
            bits >>= 6;
        }
        left -= left.min(10);
    }
}

fn fill_field(field: Field, json: bool, with: &mut Fill<'_>, out: &mut Vec<u8>) {
    use std::io::Write as _;
    match field {
        Field::N => {
            let _ = write!(out, "{}", with.n);
        }
        Field::Seq => {
            let _ = write!(out, "{}", with.seq);
        }
        Field::Now(unit) => {
            let _ = write!(out, "{}", unix_ns() / unit);
        }
        Field::Random(len) => random_text(with.rng, len, out),
        Field::Bytes(len) => {
            let start = out.len();
            out.resize(start + len, 0);
            with.rng.fill(&mut out[start..]);
        }
        Field::Sample => {
            if let Some(samples) = with.samples {
                let line = samples.pick(with.rng);
                push_escaped(line, json, out);
            }
        }
        Field::Column(column) => {
            if let Some(data) = with.data {
                push_escaped(data.value(with.n, column), json, out);
            }
        }
    }
}

fn push_escaped(text: &str, json: bool, out: &mut Vec<u8>) {
    if json {
        out.extend_from_slice(&json_escaped(text));
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// `text` as it goes between the quotes of a JSON string.
fn json_escaped(text: &str) -> Vec<u8> {
    let quoted = serde_json::to_string(text).expect("a string always serialises");
    quoted.as_bytes()[1..quoted.len() - 1].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(template: &Template, n: u64, seq: u64, data: Option<&DataTable>) -> String {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut fill = Fill {
            n,
            seq,
            data,
            samples: None,
            rng: &mut rng,
        };
        template.fill_string(&mut fill)
    }

    #[test]
    fn numbers_columns_and_escaped_braces_are_filled() {
        let data = DataTable::parse("user,token\nann,t1\nbob,\"t,2\"\n").unwrap();
        let names = Names {
            columns: data.columns(),
            ..Names::default()
        };
        let t = Template::parse("ws://h/{user}?n={n}&t={token}&s={seq}{{x}}", &names).unwrap();
        assert_eq!(filled(&t, 0, 7, Some(&data)), "ws://h/ann?n=0&t=t1&s=7{x}");
        assert_eq!(filled(&t, 3, 0, Some(&data)), "ws://h/bob?n=3&t=t,2&s=0{x}");
    }

    #[test]
    fn unknown_names_unbalanced_braces_and_misplaced_bytes_are_refused() {
        let names = Names::default();
        for bad in ["{nope}", "{n", "a}b", "{bytes:4}", "{random:x}", "{sample}"] {
            let err = Template::parse(bad, &names).unwrap_err();
            assert!(err.contains(bad) || err.contains("sample"), "{bad}: {err}");
        }
        let binary = Names {
            binary: true,
            ..Names::default()
        };
        assert!(Template::parse("{bytes:4}", &binary).is_ok());
    }

    #[test]
    fn random_text_has_the_length_asked_for() {
        let t = Template::parse("{random:37}", &Names::default()).unwrap();
        let text = filled(&t, 0, 0, None);
        assert_eq!(text.len(), 37);
        assert!(text.bytes().all(|b| ALPHABET.contains(&b)));
    }

    #[test]
    fn json_strings_are_escaped_and_lone_numbers_become_numbers() {
        let data = DataTable::parse("who\nsaid \"hi\"\n").unwrap();
        let names = Names {
            columns: data.columns(),
            ..Names::default()
        };
        let value: toml::Value = toml::from_str(
            r#"
            n = "{n}"
            text = "{who} #{seq}"
            flags = [true, 1.5]
            "#,
        )
        .unwrap();
        let t = Template::json(&value, &names).unwrap();
        let text = filled(&t, 4, 2, Some(&data));
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["n"], 4);
        assert_eq!(parsed["text"], "said \"hi\" #2");
        assert_eq!(parsed["flags"], serde_json::json!([true, 1.5]));
    }
}
