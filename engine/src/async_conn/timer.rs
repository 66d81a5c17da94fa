//! [`Timer`]: a deadline that a poll can wait on. One tokio `Sleep` per timer, made the
//! first time a deadline is set and moved after that, so a connection with deadlines
//! costs one allocation, and one without none.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Instant;

use tokio::time::Sleep;

#[derive(Debug, Default)]
pub(crate) struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    at: Option<Instant>,
}

impl Timer {
    /// Whether `deadline` has passed; if not, the task of `cx` is woken when it does.
    pub(crate) fn expired(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        if Instant::now() >= deadline {
            return true;
        }
        let at = tokio::time::Instant::from_std(deadline);
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if self.at != Some(deadline) {
                    sleep.as_mut().reset(at);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        self.at = Some(deadline);
        sleep.as_mut().poll(cx).is_ready()
    }
}
