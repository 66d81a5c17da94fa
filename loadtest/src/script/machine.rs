//! [`Machine`]: one user's steps as a state machine without I/O. Its inputs are "the
//! connection opened", "a message arrived", "a timer is due" (with the time); its outputs
//! are [`Action`]s (send, reconnect, close, fail) and the next moment it wants to be woken
//! ([`Machine::deadline`]). The worker's handler turns them into engine calls; the tests
//! below run whole conversations on a fake clock.

use std::sync::Arc;

use ringcast::MessageType;

use super::program::{Op, Program};
use crate::data::{DataTable, Samples};
use crate::template::Fill;

/// Sends one call may make before it yields to the next timer tick, so a long loop of
/// sends neither stalls the worker nor floods the queue at once.
const SEND_BUDGET: u32 = 1000;

/// What a machine asks its handler to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this message.
    Send(MessageType, Vec<u8>),
    /// Close this connection and dial again, to this URL (`None`: the scenario's).
    Connect(Option<String>),
    /// Close with this code: the steps are done, or a `close` step.
    Close(u16),
    /// An `expect` timed out: count it and close.
    Failed,
}

/// When a machine wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Not before something arrives.
    Never,
    /// At this time (nanoseconds on the run's clock).
    At(u64),
}

/// What template filling needs besides the machine's own numbers.
#[derive(Debug)]
pub struct Env<'a> {
    /// The data file.
    pub data: Option<&'a DataTable>,
    /// The samples file.
    pub samples: Option<&'a Samples>,
    /// Random values (random text, think times, samples).
    pub rng: &'a mut fastrand::Rng,
}

/// What the machine waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The connection to open (first, or after a `connect` step).
    Opening,
    /// Time (a pause, a timed receive, or a yield).
    Until(u64),
    /// `count` messages matching the `Expect` at `pc`, since `since`, until `deadline`.
    Expect { got: u32, since: u64, deadline: u64 },
    /// Nothing: receive until the run ends.
    Forever,
    /// The steps are over (closing or closed).
    Done,
}

/// One user's place in the steps.
#[derive(Debug, Clone)]
pub struct Machine {
    program: Arc<Program>,
    /// The user's number (`{n}`).
    n: u64,
    /// Messages sent so far (`{seq}`).
    seq: u64,
    pc: usize,
    /// Rounds left of the loops we are in, innermost last (`None`: endless).
    loops: Vec<Option<u64>>,
    wait: Wait,
}

impl Machine {
    /// A user numbered `n`, waiting for its first connection to open.
    pub fn new(program: Arc<Program>, n: u64) -> Machine {
        Machine {
            program,
            n,
            seq: 0,
            pc: 0,
            loops: Vec::new(),
            wait: Wait::Opening,
        }
    }

    /// When to wake it.
    pub fn deadline(&self) -> Wake {
        match self.wait {
            Wait::Until(at) => Wake::At(at),
            Wait::Expect { deadline, .. } => Wake::At(deadline),
            Wait::Opening | Wait::Forever | Wait::Done => Wake::Never,
        }
    }

    /// Whether its steps are over.
    pub fn is_done(&self) -> bool {
        self.wait == Wait::Done
    }

    /// The connection opened: go on with the steps.
    pub fn opened(&mut self, now: u64, env: &mut Env<'_>, out: &mut Vec<Action>) {
        if self.wait == Wait::Opening {
            self.run(now, env, out);
        }
    }

    /// A message arrived at `now`; returns the latency of an `expect` it completed (from
    /// the moment the machine started waiting for it).
    pub fn message(
        &mut self,
        now: u64,
        payload: &[u8],
        env: &mut Env<'_>,
        out: &mut Vec<Action>,
    ) -> Option<u64> {
        let Wait::Expect {
            got,
            since,
            deadline,
        } = self.wait
        else {
            return None;
        };
        let Some(Op::Expect { pattern, count, .. }) = self.program.ops.get(self.pc) else {
            return None;
        };
        if !pattern.is_match(payload) {
            return None;
        }
        if got + 1 < *count {
            self.wait = Wait::Expect {
                got: got + 1,
                since,
                deadline,
            };
            return None;
        }
        self.pc += 1;
        self.run(now, env, out);
        Some(now.saturating_sub(since))
    }

    /// A timer fired at `now` (early or stale ones are ignored).
    pub fn timer(&mut self, now: u64, env: &mut Env<'_>, out: &mut Vec<Action>) {
        match self.wait {
            Wait::Until(at) if at <= now => self.run(now, env, out),
            Wait::Expect { deadline, .. } if deadline <= now => {
                self.wait = Wait::Done;
                out.push(Action::Failed);
            }
            _ => {}
        }
    }

    /// Runs operations from `pc` until one waits.
    fn run(&mut self, now: u64, env: &mut Env<'_>, out: &mut Vec<Action>) {
        let program = self.program.clone();
        let mut budget = SEND_BUDGET;
        loop {
            let Some(op) = program.ops.get(self.pc) else {
                self.wait = Wait::Done;
                out.push(Action::Close(1000));
                return;
            };
            match op {
                Op::Send(kind, template) => {
                    if budget == 0 {
                        self.wait = Wait::Until(now); // the next tick goes on
                        return;
                    }
                    budget -= 1;
                    let mut payload = Vec::new();
                    template.fill(&mut self.fill(env), &mut payload);
                    out.push(Action::Send(*kind, payload));
                    self.seq += 1;
                    self.pc += 1;
                }
                Op::Expect { timeout, .. } => {
                    self.wait = Wait::Expect {
                        got: 0,
                        since: now,
                        deadline: now.saturating_add(*timeout),
                    };
                    return;
                }
                Op::Pause(shortest, longest) => {
                    let pause = if shortest == longest {
                        *shortest
                    } else {
                        env.rng.u64(*shortest..=*longest)
                    };
                    self.pc += 1;
                    self.wait = Wait::Until(now.saturating_add(pause));
                    return;
                }
                Op::Receive(Some(span)) => {
                    self.pc += 1;
                    self.wait = Wait::Until(now.saturating_add(*span));
                    return;
                }
                Op::Receive(None) => {
                    self.wait = Wait::Forever;
                    return;
                }
                Op::Connect(url) => {
                    let url = url.as_ref().map(|t| t.fill_string(&mut self.fill(env)));
                    self.pc += 1;
                    self.wait = Wait::Opening;
                    out.push(Action::Connect(url));
                    return;
                }
                Op::Close(code) => {
                    self.wait = Wait::Done;
                    out.push(Action::Close(*code));
                    return;
                }
                Op::Loop { times, end } => {
                    if *times == Some(0) {
                        self.pc = end + 1;
                    } else {
                        self.loops.push(*times);
                        self.pc += 1;
                    }
                }
                Op::EndLoop { start } => {
                    let left = self.loops.last_mut().expect("an EndLoop follows its Loop");
                    let again = match left {
                        None => true,
                        Some(n) => {
                            *n -= 1;
                            *n > 0
                        }
                    };
                    if again {
                        self.pc = start + 1;
                    } else {
                        self.loops.pop();
                        self.pc += 1;
                    }
                }
            }
        }
    }

    fn fill<'a>(&self, env: &'a mut Env<'_>) -> Fill<'a> {
        Fill {
            n: self.n,
            seq: self.seq,
            data: env.data,
            samples: env.samples,
            rng: env.rng,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::StepSpec;

    fn program(text: &str) -> Arc<Program> {
        #[derive(serde::Deserialize)]
        struct Steps {
            steps: Vec<StepSpec>,
        }
        let steps: Steps = toml::from_str(text).unwrap();
        Arc::new(Program::compile(&steps.steps, None, false).unwrap())
    }

    /// A machine on a fake clock.
    struct Run {
        machine: Machine,
        rng: fastrand::Rng,
    }

    impl Run {
        fn new(text: &str, n: u64) -> Run {
            Run {
                machine: Machine::new(program(text), n),
                rng: fastrand::Rng::with_seed(1),
            }
        }

        /// Calls `f` on the machine with an environment; what it returned and asked for.
        fn call<R>(
            &mut self,
            f: impl FnOnce(&mut Machine, &mut Env<'_>, &mut Vec<Action>) -> R,
        ) -> (R, Vec<Action>) {
            let mut out = Vec::new();
            let mut env = Env {
                data: None,
                samples: None,
                rng: &mut self.rng,
            };
            let r = f(&mut self.machine, &mut env, &mut out);
            (r, out)
        }

        fn opened(&mut self, now: u64) -> Vec<Action> {
            self.call(|m, env, out| m.opened(now, env, out)).1
        }

        fn message(&mut self, now: u64, text: &str) -> (Option<u64>, Vec<Action>) {
            self.call(|m, env, out| m.message(now, text.as_bytes(), env, out))
        }

        fn timer(&mut self, now: u64) -> Vec<Action> {
            self.call(|m, env, out| m.timer(now, env, out)).1
        }
    }

    fn text(s: &str) -> Action {
        Action::Send(MessageType::Text, s.as_bytes().to_vec())
    }

    #[test]
    fn send_expect_sleep_then_close_when_the_steps_end() {
        let mut run = Run::new(
            r#"
            [[steps]]
            send = "login {n}"
            [[steps]]
            expect = "^ok"
            [[steps]]
            sleep = "1s"
            [[steps]]
            send_json = { n = "{n}", seq = "{seq}" }
            "#,
            7,
        );
        assert_eq!(run.opened(100), [text("login 7")]);
        assert_eq!(run.machine.deadline(), Wake::At(100 + 10_000_000_000));
        // Not a match: still waiting.
        assert_eq!(run.message(150, "nope"), (None, vec![]));
        let (latency, out) = run.message(400, "ok!");
        assert_eq!((latency, out), (Some(300), vec![]));
        assert_eq!(run.machine.deadline(), Wake::At(400 + 1_000_000_000));
        assert!(run.timer(500).is_empty(), "early timers are ignored");
        assert_eq!(
            run.timer(400 + 1_000_000_000),
            [text(r#"{"n":7,"seq":1}"#), Action::Close(1000)]
        );
        assert!(run.machine.is_done());
    }

    #[test]
    fn expect_counts_matches_and_fails_at_its_timeout() {
        let mut run = Run::new(
            "[[steps]]\nexpect = 'tick'\ncount = 2\ntimeout = '1s'\n[[steps]]\nsend = 'x'",
            0,
        );
        assert!(run.opened(0).is_empty());
        assert_eq!(run.message(10, "tick"), (None, vec![]));
        assert_eq!(run.timer(1_000_000_000), [Action::Failed]);
        assert!(run.machine.is_done());
        // Nothing more once failed.
        assert_eq!(run.message(20, "tick"), (None, vec![]));
    }

    #[test]
    fn loops_repeat_their_steps_and_connect_waits_for_the_open() {
        let mut run = Run::new(
            r#"
            [[steps]]
            loop = 2
            steps = [{ send = "ping {seq}" }, { expect = "pong" }]
            [[steps]]
            connect = "ws://other/{n}"
            [[steps]]
            receive = "end"
            "#,
            3,
        );
        assert_eq!(run.opened(0), [text("ping 0")]);
        assert_eq!(run.message(5, "pong").1, [text("ping 1")]);
        assert_eq!(
            run.message(9, "pong").1,
            [Action::Connect(Some("ws://other/3".into()))]
        );
        // Waiting for the new connection: messages of the old one change nothing.
        assert_eq!(run.message(10, "pong"), (None, vec![]));
        assert!(run.opened(20).is_empty());
        assert_eq!(run.machine.deadline(), Wake::Never);
        assert!(!run.machine.is_done());
    }

    #[test]
    fn a_long_loop_of_sends_yields_to_the_next_tick() {
        // Within the budget: all at once.
        let mut run = Run::new(
            "[[steps]]\nloop = 1000\nsteps = [{ send = 'x' }]\n[[steps]]\nreceive = 'end'",
            0,
        );
        assert_eq!(run.opened(5).len(), SEND_BUDGET as usize);
        assert_eq!(run.machine.deadline(), Wake::Never);
        // Past it (loops within loops): the rest at the next tick.
        let mut run = Run::new(
            "[[steps]]\nloop = 3\nsteps = [{ loop = 500, steps = [{ send = 'x' }] }]",
            0,
        );
        assert_eq!(run.opened(5).len(), SEND_BUDGET as usize);
        assert_eq!(run.machine.deadline(), Wake::At(5));
        let rest = run.timer(6);
        assert_eq!(rest.len(), 500 + 1);
        assert_eq!(rest.last(), Some(&Action::Close(1000)));
    }

    #[test]
    fn think_waits_between_its_bounds() {
        let mut run = Run::new("[[steps]]\nthink = ['1s', '2s']", 0);
        assert!(run.opened(0).is_empty());
        let Wake::At(at) = run.machine.deadline() else {
            panic!("a think waits");
        };
        assert!((1_000_000_000..=2_000_000_000).contains(&at), "{at}");
    }
}
