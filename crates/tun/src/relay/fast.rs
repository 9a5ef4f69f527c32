//! The fast engine: one thread per queue pair, epoll over both devices and the stop pipe,
//! draining every ready device in a batch; after a busy wake-up, a short pause (interrupt
//! moderation) so that the next one moves a batch.

use std::io;
use std::os::fd::OwnedFd;

use super::MAX_PACKET;
use super::forward::{Forwarder, RelayError, drain, release_due};
use super::timer::Timer;
use crate::pipeline::Direction;

/// The fast engine's worker: epoll over both devices of a queue pair and the stop pipe; each
/// wake-up drains every ready device in a batch; a busy wake-up is followed by a short
/// `coalesce` pause (see [`super::RelayOptions::coalesce`]).
pub(super) fn epoll_worker(
    fwd: &[Forwarder<'_>; 2],
    stop_rx: &OwnedFd,
    coalesce: Option<std::time::Duration>,
) -> Result<(), RelayError> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    let fail = |device: &str, e: nix::errno::Errno| RelayError {
        device: device.to_string(),
        source: e.into(),
    };
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| fail("epoll", e))?;
    for (i, f) in fwd.iter().enumerate() {
        epoll
            .add(f.from.fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .map_err(|e| fail(f.from.label(), e))?;
    }
    epoll
        .add(stop_rx, EpollEvent::new(EpollFlags::EPOLLIN, 2))
        .map_err(|e| fail("stop pipe", e))?;
    // With a pipeline: a timer for the packets it holds (event 3).
    let timer = match fwd[0].pipeline {
        Some(_) => {
            let t = Timer::new().map_err(|e| RelayError {
                device: "timer".into(),
                source: e,
            })?;
            epoll
                .add(&t, EpollEvent::new(EpollFlags::EPOLLIN, 3))
                .map_err(|e| fail("timer", e))?;
            Some(t)
        }
        None => None,
    };
    // Stages that decide packets later wake the worker (events 4 and 5: forward, backward).
    if let Some((pipeline, _)) = fwd[0].pipeline {
        for waker in pipeline.wakers() {
            for dir in Direction::BOTH {
                epoll
                    .add(
                        waker.fd(dir),
                        EpollEvent::new(EpollFlags::EPOLLIN, 4 + dir.index() as u64),
                    )
                    .map_err(|e| fail("waker", e))?;
            }
        }
    }
    let mut buf = vec![0u8; MAX_PACKET];
    let mut out = Vec::new();
    let mut events = [EpollEvent::empty(); 8];
    let mut busy = false;
    loop {
        if let Some(pause) = coalesce
            && busy
        {
            std::thread::sleep(pause);
        }
        busy = false;
        if let Some(t) = &timer {
            t.set(release_due(&[&fwd[0], &fwd[1]], &mut out))
                .map_err(|e| RelayError {
                    device: "timer".into(),
                    source: e,
                })?;
        }
        let n = match epoll.wait(&mut events, EpollTimeout::from(1000u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(fail("epoll", e)),
        };
        for ev in &events[..n] {
            let which = ev.data() as usize;
            if which >= 3 {
                // The timer or a waker: what is due or decided is released at the top of the
                // loop.
                continue;
            }
            if which == 2 {
                return Ok(());
            }
            let flags = ev.events();
            if flags.contains(EpollFlags::EPOLLIN) {
                busy |= drain(&fwd[which], &mut buf, &mut out)?.is_busy_with_small_packets();
            } else if flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
                return Err(RelayError {
                    device: fwd[which].from.label().to_string(),
                    source: io::Error::other(super::hangup_message(
                        flags.contains(EpollFlags::EPOLLHUP),
                        flags.contains(EpollFlags::EPOLLERR),
                    )),
                });
            }
        }
    }
}
