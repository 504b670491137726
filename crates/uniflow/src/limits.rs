//! The limit on open files, raised for a server.
//!
//! Every connection a listener holds is a file descriptor, and most systems start a process
//! with a soft limit of 1,024 open files: far below what one instance serves, and past it
//! `accept` fails until a connection closes. The hard limit is usually much higher (a systemd
//! service gets 524,288). Go's runtime, which upstream is built on, raises the soft limit to
//! the hard one for every program, so `start` does the same.

/// What raising the limit found and left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process started with; `None` is unlimited.
    pub before: Option<u64>,
    /// The soft limit now.
    pub now: Option<u64>,
}

/// Below this many open files a server is warned that it may run out of connections.
pub const FEW: u64 = 4096;

/// Raises the soft limit on open files to the hard limit.
///
/// # Errors
/// When the system refuses the new limit; the old one stays in force.
pub fn raise_open_files() -> std::io::Result<OpenFiles> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    // An unlimited hard limit is left alone: Linux refuses an unlimited number of open files.
    let Some(maximum) = limit.maximum.filter(|m| before.is_some_and(|b| b < *m)) else {
        return Ok(OpenFiles {
            before,
            now: before,
        });
    };
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        },
    )?;
    Ok(OpenFiles {
        before,
        now: Some(maximum),
    })
}
