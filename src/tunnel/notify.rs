//! The service manager's readiness protocol (sd_notify(3)) without libsystemd: one datagram per
//! message to the Unix socket `$NOTIFY_SOCKET` names — a path, or an abstract name written
//! `@name`. `tun up` sends `READY=1` once the routing is in place and the relay runs,
//! `STATUS=…` lines on the way, and `STOPPING=1` when it starts tearing down
//! (`contrib/systemd/hostkit-tun@.service` is `Type=notify`).

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable the service manager sets.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where the messages go: the service manager's socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    shown: String,
}

impl Notifier {
    /// The socket `$NOTIFY_SOCKET` names; `Ok(None)` when it is unset or empty (not run by a
    /// service manager), an error when it names something this cannot send to.
    pub fn from_env() -> Result<Option<Notifier>, String> {
        let Some(value) = std::env::var_os(NOTIFY_SOCKET) else {
            return Ok(None);
        };
        if value.is_empty() {
            return Ok(None);
        }
        let shown = value.to_string_lossy().into_owned();
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str());
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(&value)),
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..])
            }
            _ => {
                return Err(format!(
                    "{NOTIFY_SOCKET}={shown}: not an absolute path or an @abstract name; no readiness notification sent"
                ));
            }
        }
        .map_err(|e| format!("{NOTIFY_SOCKET}={shown}: {e}"))?;
        let socket = UnixDatagram::unbound()
            .map_err(|e| format!("{NOTIFY_SOCKET}: create a datagram socket: {e}"))?;
        Ok(Some(Notifier {
            socket,
            addr,
            shown,
        }))
    }

    /// Sends one message: newline-separated `KEY=VALUE` assignments (`READY=1\nSTATUS=…`).
    pub fn send(&self, message: &str) -> Result<(), String> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|e| format!("notify {}: {e}", self.shown))
    }
}

/// `STATUS=` text on one line (the protocol separates assignments by newlines).
pub fn status(text: &str) -> String {
    format!("STATUS={}", text.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr: SocketAddr::from_pathname(&path).unwrap(),
            shown: String::new(),
        };
        n.send("READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("hostkit-notify-test-{}", std::process::id());
        let abs = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&abs).unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr: abs,
            shown: String::new(),
        };
        n.send("STOPPING=1").unwrap();
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status("a\nb"), "STATUS=a b");
    }
}
