//! The simple engine: one thread per direction, `poll(2)` on the source device and the stop
//! pipe, one packet per read and write — the classic relay.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::MAX_PACKET;
use super::forward::{Forwarder, RelayError, drain, release_due};
use super::timer::Timer;

/// Relays one direction until the stop pipe closes or the device fails; with a pipeline, a
/// timer wakes it for the packets the pipeline holds, and each stage's waker for the packets
/// the stage has decided.
pub(super) fn pump(fwd: &Forwarder<'_>, stop_rx: &OwnedFd) -> Result<(), RelayError> {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut out = Vec::new();
    let fail = |e: io::Error| RelayError {
        device: fwd.from.label().to_string(),
        source: e,
    };
    let timer = match fwd.pipeline {
        Some(_) => Some(Timer::new().map_err(fail)?),
        None => None,
    };
    // The descriptors to wait on, built once (poll overwrites what it reports).
    let mut fds = vec![
        PollFd::new(fwd.from.fd(), PollFlags::POLLIN),
        PollFd::new(stop_rx.as_fd(), PollFlags::POLLIN),
    ];
    if let Some(t) = &timer {
        fds.push(PollFd::new(t.as_fd(), PollFlags::POLLIN));
    }
    // Stages that decide packets later wake this direction's worker.
    if let Some((pipeline, dir)) = fwd.pipeline {
        fds.extend(
            pipeline
                .wakers()
                .map(|w| PollFd::new(w.fd(dir), PollFlags::POLLIN)),
        );
    }
    loop {
        if let Some(t) = &timer {
            t.set(release_due(&[fwd], &mut out)).map_err(fail)?;
        }
        let (dev_events, stop_events) = {
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    return Err(RelayError {
                        device: fwd.from.label().to_string(),
                        source: e.into(),
                    });
                }
            }
            (
                fds[0].revents().unwrap_or(PollFlags::empty()),
                fds[1].revents().unwrap_or(PollFlags::empty()),
            )
        };
        if !stop_events.is_empty() {
            return Ok(());
        }
        if dev_events.intersects(PollFlags::POLLIN) {
            drain(fwd, &mut buf, &mut out)?;
        } else if dev_events
            .intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
        {
            return Err(RelayError {
                device: fwd.from.label().to_string(),
                source: io::Error::other(super::hangup_message(
                    dev_events.contains(PollFlags::POLLHUP),
                    dev_events.contains(PollFlags::POLLERR),
                )),
            });
        }
    }
}
