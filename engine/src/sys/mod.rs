//! The kernel boundary, and the only home of `unsafe` in ringcast: the choice of
//! backend (io_uring or epoll) and socket set-up. The engine issue adds the io_uring and
//! epoll drivers here.
//!
//! It knows file descriptors and buffers, never WebSocket frames. Every `unsafe` block
//! says which invariant makes it sound and who keeps it.

pub mod socket;

use std::io;

/// Turn a libc call's `-1` into the `io::Error` of `errno`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller passes arguments valid for this libc function; each call
        // site states why below.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// Which kernel interface a worker drives its sockets with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring: multishot accept and recv into a provided-buffer ring, batched submits.
    Uring,
    /// epoll: readiness, then plain syscalls. The fallback where io_uring is disabled or
    /// blocked (a sysctl, a container's seccomp profile, an old kernel).
    Epoll,
}

impl Backend {
    /// Every backend, for tests that run once per backend.
    pub const ALL: [Backend; 2] = [Backend::Uring, Backend::Epoll];

    /// The backend forced by `RINGCAST_BACKEND` (`uring` or `epoll`), if any.
    pub fn from_env() -> Option<Backend> {
        Backend::parse(&std::env::var("RINGCAST_BACKEND").ok()?)
    }

    /// `uring` or `epoll` (case-insensitive).
    pub fn parse(name: &str) -> Option<Backend> {
        match name.trim().to_ascii_lowercase().as_str() {
            "uring" | "io_uring" | "io-uring" => Some(Backend::Uring),
            "epoll" => Some(Backend::Epoll),
            _ => None,
        }
    }

    /// Whether io_uring can be set up here; the error says why not (EPERM from a
    /// seccomp profile or the `io_uring_disabled` sysctl, ENOSYS from an old kernel).
    pub fn probe_uring() -> io::Result<()> {
        io_uring::IoUring::new(2).map(drop)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_parse() {
        assert_eq!(Backend::parse("URING"), Some(Backend::Uring));
        assert_eq!(Backend::parse(" epoll "), Some(Backend::Epoll));
        assert_eq!(Backend::parse("kqueue"), None);
    }

    #[test]
    fn uring_probe_answers_without_panicking() {
        // On this project's machines io_uring is on; elsewhere the error must be clean.
        match Backend::probe_uring() {
            Ok(()) => {}
            Err(err) => assert!(err.raw_os_error().is_some(), "{err}"),
        }
    }
}
