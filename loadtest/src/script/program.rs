//! The steps of a scenario compiled into a flat list of operations with jumps: what a
//! [`Machine`](super::Machine) runs. Compiling checks every step (one action each,
//! templates against the data columns, regexes, durations) and that a loop which could
//! run long waits for something in each round.

use std::time::Duration;

use regex::bytes::Regex;
use ringcast::MessageType;

use super::{Span, StepSpec, ThinkSpec, EXPECT_TIMEOUT};
use crate::data::DataTable;
use crate::template::{Names, Template};

/// Rounds above which a loop must wait for something in each round: a loop of sends
/// alone would queue them all at once.
const BUSY_LOOP_LIMIT: u64 = 1000;

/// One operation.
#[derive(Debug, Clone)]
pub enum Op {
    /// Close this connection and dial again for the same user (`None`: the scenario's
    /// URL; `Some`: this template).
    Connect(Option<Template>),
    /// Send a message.
    Send(MessageType, Template),
    /// Wait for `count` messages matching `pattern`, at most `timeout`.
    Expect {
        /// What a message must match.
        pattern: Regex,
        /// How many.
        count: u32,
        /// How long to wait, in nanoseconds.
        timeout: u64,
    },
    /// Wait between the two (nanoseconds; equal for a fixed pause).
    Pause(u64, u64),
    /// Read for this long (nanoseconds), or until the run ends.
    Receive(Option<u64>),
    /// Close with this code.
    Close(u16),
    /// Start of a loop of `times` rounds (`None`: until the run ends) whose end is `end`.
    Loop {
        /// Rounds.
        times: Option<u64>,
        /// The index of its `EndLoop`.
        end: usize,
    },
    /// End of the loop that starts at `start`.
    EndLoop {
        /// The index of its `Loop`.
        start: usize,
    },
}

impl Op {
    /// Whether the operation waits for something (time, a message, a connection).
    fn waits(&self) -> bool {
        matches!(
            self,
            Op::Connect(_) | Op::Expect { .. } | Op::Pause(..) | Op::Receive(_)
        )
    }
}

/// The compiled steps.
#[derive(Debug, Clone, Default)]
pub struct Program {
    /// The operations.
    pub ops: Vec<Op>,
}

impl Program {
    /// Compiles `steps`; templates may name the data file's columns and `{sample}`
    /// when there are samples.
    pub fn compile(
        steps: &[StepSpec],
        data: Option<&DataTable>,
        samples: bool,
    ) -> Result<Program, String> {
        let columns: &[String] = data.map_or(&[], |d| d.columns());
        let mut program = Program::default();
        program.push_steps(steps, columns, samples, "step")?;
        Ok(program)
    }

    /// Whether a step waits for an answer (so response latency is measured).
    pub fn expects_any(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, Op::Expect { .. }))
    }

    fn push_steps(
        &mut self,
        steps: &[StepSpec],
        columns: &[String],
        samples: bool,
        prefix: &str,
    ) -> Result<(), String> {
        for (i, step) in steps.iter().enumerate() {
            let place = format!("{prefix} {}", i + 1);
            self.push_step(step, columns, samples, &place)
                .map_err(|e| format!("{place}: {e}"))?;
        }
        Ok(())
    }

    fn push_step(
        &mut self,
        step: &StepSpec,
        columns: &[String],
        samples: bool,
        place: &str,
    ) -> Result<(), String> {
        let names = Names {
            columns,
            samples,
            binary: false,
        };
        let actions = [
            ("connect", step.connect.is_some()),
            ("send", step.send.is_some()),
            ("send_binary", step.send_binary.is_some()),
            ("send_json", step.send_json.is_some()),
            ("expect", step.expect.is_some()),
            ("sleep", step.sleep.is_some()),
            ("think", step.think.is_some()),
            ("loop", step.repeat.is_some()),
            ("receive", step.receive.is_some()),
            ("close", step.close.is_some()),
        ];
        let given: Vec<&str> = actions.iter().filter(|a| a.1).map(|a| a.0).collect();
        let action = match given.as_slice() {
            [one] => *one,
            [] => {
                return Err(
                    "no action (connect, send, send_binary, send_json, expect, sleep, think, \
                     loop, receive, close)"
                        .into(),
                )
            }
            more => return Err(format!("one action per step, not {}", more.join(" and "))),
        };
        let options = [
            ("count", step.count.is_some(), "expect"),
            ("timeout", step.timeout.is_some(), "expect"),
            ("steps", step.steps.is_some(), "loop"),
        ];
        for (option, present, owner) in options {
            if present && action != owner {
                return Err(format!("`{option}` goes with {owner}, not {action}"));
            }
        }
        let op = match action {
            "connect" => match step.connect.as_ref() {
                Some(toml::Value::Boolean(true)) => Op::Connect(None),
                Some(toml::Value::String(url)) => Op::Connect(Some(Template::parse(url, &names)?)),
                _ => return Err("connect = true, or a URL".into()),
            },
            "send" => Op::Send(
                MessageType::Text,
                Template::parse(step.send.as_deref().unwrap_or_default(), &names)?,
            ),
            "send_binary" => Op::Send(
                MessageType::Binary,
                Template::parse(
                    step.send_binary.as_deref().unwrap_or_default(),
                    &Names {
                        binary: true,
                        ..names
                    },
                )?,
            ),
            "send_json" => match &step.send_json {
                Some(value) => Op::Send(MessageType::Text, Template::json(value, &names)?),
                None => unreachable!("the action was found present"),
            },
            "expect" => {
                let text = step.expect.as_deref().unwrap_or_default();
                let pattern = Regex::new(text).map_err(|e| format!("expect {text:?}: {e}"))?;
                let count = step.count.unwrap_or(1);
                if count == 0 {
                    return Err("count must be 1 or more".into());
                }
                let timeout = step.timeout.map_or(EXPECT_TIMEOUT, |s| s.0);
                Op::Expect {
                    pattern,
                    count,
                    timeout: nanos(timeout),
                }
            }
            "sleep" => {
                let d = step.sleep.map_or(0, |s| nanos(s.0));
                Op::Pause(d, d)
            }
            "think" => match &step.think {
                Some(ThinkSpec::Fixed(Span(d))) => Op::Pause(nanos(*d), nanos(*d)),
                Some(ThinkSpec::Between([Span(a), Span(b)])) if a <= b => {
                    Op::Pause(nanos(*a), nanos(*b))
                }
                _ => return Err("think = [shortest, longest]".into()),
            },
            "receive" => match &step.receive {
                Some(toml::Value::String(end)) if end == "end" => Op::Receive(None),
                Some(toml::Value::String(text)) => Op::Receive(Some(nanos(
                    Duration::try_from_secs_f64(super::parse_seconds(text)?)
                        .map_err(|e| e.to_string())?,
                ))),
                Some(toml::Value::Integer(s)) if *s >= 0 => {
                    Op::Receive(Some(nanos(Duration::from_secs(*s as u64))))
                }
                _ => return Err("receive = a duration, or \"end\"".into()),
            },
            "close" => match &step.close {
                Some(toml::Value::Boolean(true)) => Op::Close(1000),
                Some(toml::Value::Integer(code)) if (1000..5000).contains(code) => {
                    Op::Close(*code as u16)
                }
                _ => return Err("close = true, or a close code (1000-4999)".into()),
            },
            "loop" => {
                let times = match step.repeat {
                    Some(0) => None,
                    other => other,
                };
                let body = step.steps.as_deref().unwrap_or_default();
                if body.is_empty() {
                    return Err("a loop needs `steps`".into());
                }
                let start = self.ops.len();
                self.ops.push(Op::Loop { times, end: 0 });
                self.push_steps(body, columns, samples, &format!("{place}, loop step"))?;
                let end = self.ops.len();
                let waits = self.ops[start + 1..].iter().any(Op::waits);
                if !waits && times.is_none_or(|t| t > BUSY_LOOP_LIMIT) {
                    return Err(format!(
                        "a loop of more than {BUSY_LOOP_LIMIT} rounds must wait for something \
                         in each (expect, sleep, think, receive, connect)"
                    ));
                }
                self.ops.push(Op::EndLoop { start });
                self.ops[start] = Op::Loop { times, end };
                return Ok(());
            }
            other => unreachable!("action {other} is in the list above"),
        };
        self.ops.push(op);
        Ok(())
    }
}

/// `d` in nanoseconds (a run never lasts 584 years).
fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Program, String> {
        #[derive(serde::Deserialize)]
        struct Steps {
            steps: Vec<StepSpec>,
        }
        let steps: Steps = toml::from_str(text).map_err(|e| e.to_string())?;
        Program::compile(&steps.steps, None, false)
    }

    #[test]
    fn loops_compile_to_jumps() {
        let program = compile(
            r#"
            [[steps]]
            send = "hi"
            [[steps]]
            loop = 3
            steps = [{ send = "ping {seq}" }, { expect = "pong" }]
            [[steps]]
            close = true
            "#,
        )
        .unwrap();
        let kinds: Vec<String> = program
            .ops
            .iter()
            .map(|op| match op {
                Op::Loop { times, end } => format!("loop {times:?} {end}"),
                Op::EndLoop { start } => format!("end {start}"),
                Op::Send(..) => "send".into(),
                Op::Expect { .. } => "expect".into(),
                Op::Close(code) => format!("close {code}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "send",
                "loop Some(3) 4",
                "send",
                "expect",
                "end 1",
                "close 1000"
            ]
        );
        assert!(program.expects_any());
    }

    #[test]
    fn step_mistakes_say_which_step() {
        for (text, says) in [
            ("[[steps]]\nsend = 'a'\nsleep = 1", "one action per step"),
            ("[[steps]]\ncount = 2", "no action"),
            (
                "[[steps]]\nsend = 'a'\ncount = 2",
                "`count` goes with expect",
            ),
            ("[[steps]]\nexpect = '('", "step 1: expect"),
            (
                "[[steps]]\nsend = 'a'\n[[steps]]\nclose = 99",
                "step 2: close",
            ),
            ("[[steps]]\nthink = ['3s', '1s']", "think"),
            ("[[steps]]\nloop = 0\nsteps = [{ send = 'x' }]", "must wait"),
            (
                "[[steps]]\nloop = 2\nsteps = [{ send = '{nope}' }]",
                "loop step 1",
            ),
            ("[[steps]]\nsend = '{bytes:3}'", "binary"),
        ] {
            let err = compile(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        // A short loop of sends alone is fine: it queues ten messages.
        assert!(compile("[[steps]]\nloop = 10\nsteps = [{ send = 'x' }]").is_ok());
    }
}
