//! An in-memory [`PacketIo`] and helpers for the relay's unit tests.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use super::endpoint::PacketIo;
use super::forward::LogSink;

/// An in-memory endpoint: `inbox` is what recv returns, `sent` what send received.
pub struct MemIo {
    name: String,
    pub inbox: Mutex<VecDeque<io::Result<Vec<u8>>>>,
    pub sent: Mutex<Vec<Vec<u8>>>,
    pub fail_sends: Mutex<Vec<bool>>,
    pub fd: OwnedFd,
    _keep_open: OwnedFd,
}

impl MemIo {
    pub fn new(name: &str) -> MemIo {
        let (r, w) = nix::unistd::pipe().unwrap();
        MemIo {
            name: name.into(),
            inbox: Mutex::new(VecDeque::new()),
            sent: Mutex::new(Vec::new()),
            fail_sends: Mutex::new(Vec::new()),
            fd: r,
            _keep_open: w,
        }
    }
}

impl MemIo {
    /// Makes `fd` readable (a byte in the pipe: the workers then try to read) or not again.
    pub fn set_readable(&self, on: bool) {
        if on {
            nix::unistd::write(&self._keep_open, &[1]).unwrap();
        } else {
            nix::unistd::read(self.fd.as_fd(), &mut [0u8; 1]).unwrap();
        }
    }
}

impl PacketIo for MemIo {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbox.lock().unwrap().pop_front() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(Err(e)) => Err(e),
            Some(Ok(p)) => {
                buf[..p.len()].copy_from_slice(&p);
                Ok(p.len())
            }
        }
    }
    fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        let mut fails = self.fail_sends.lock().unwrap();
        if !fails.is_empty() && fails.remove(0) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.sent.lock().unwrap().push(pkt.to_vec());
        Ok(pkt.len())
    }
    fn label(&self) -> &str {
        &self.name
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub fn echo_request() -> Vec<u8> {
    let mut p = vec![0u8; 84];
    p[0] = 0x45;
    p[9] = 1;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p[20] = 8;
    p
}

pub fn collecting_sink() -> (LogSink, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    (
        Arc::new(move |s: &str| l.lock().unwrap().push(s.to_string())),
        lines,
    )
}
