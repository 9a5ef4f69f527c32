//! A worker's timer for the packets the pipeline holds: a `timerfd` (nanosecond precision,
//! unlike `poll`/`epoll_wait`'s milliseconds), armed for the next held packet and waited on
//! with the devices.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A one-shot monotonic timer whose descriptor becomes readable when it fires.
pub(super) struct Timer {
    fd: OwnedFd,
    /// Whether it may be armed or have fired (one worker owns it): a disarmed timer is left
    /// alone, so a relay with nothing held makes no system call for it.
    armed: std::cell::Cell<bool>,
}

impl Timer {
    /// A disarmed timer.
    pub fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes plain flags and returns a new descriptor or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Timer {
            fd,
            armed: std::cell::Cell::new(false),
        })
    }

    /// Fires once after `after` (at least 1 ns), or never (`None`). Clears a past expiry.
    pub fn set(&self, after: Option<Duration>) -> io::Result<()> {
        if after.is_none() && !self.armed.get() {
            return Ok(());
        }
        self.clear();
        self.armed.set(after.is_some());
        let value = match after {
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            Some(d) => {
                let d = d.max(Duration::from_nanos(1));
                libc::timespec {
                    tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
                    tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
                }
            }
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: the descriptor is a timerfd we own; `spec` is a valid itimerspec that lives
        // across the call; the old value is not asked for (null).
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Reads away an expiry, if any (the descriptor is non-blocking).
    pub fn clear(&self) {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer of 8 bytes from our descriptor.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_after_the_time_and_not_when_disarmed() {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let t = Timer::new().unwrap();
        let wait = |ms: u16| {
            let mut fds = [PollFd::new(t.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(ms)).unwrap()
        };
        t.set(Some(Duration::from_millis(5))).unwrap();
        assert_eq!(wait(2000), 1);
        t.clear();
        assert_eq!(wait(20), 0, "one-shot");
        t.set(Some(Duration::from_millis(5))).unwrap();
        t.set(None).unwrap();
        assert_eq!(wait(30), 0, "disarmed");
    }
}
