//! Live control of a running relay: a Unix stream socket beside the state file in the run
//! directory (root's, not writable by others), mode 0600, one JSON request per connection.
//!
//! Requests (version 1): `{"version":1,"op":"stats"}`, and `{"version":1,"op":"set", …}`
//! with any of `impair` (a list of specs; `[]` removes the impairment), `impair_filter`,
//! `seed`, `pcap` (an absolute path), `no_pcap` (stops the capture), `pcap_raw`, `pcap_filter`.
//! Replies: `{"ok":true,"directions":[…],"stages":[…]}` or `{"ok":false,"error":"…"}`.
//! The relay applies a change between two packets (see `hostkit_tun::Pipeline::replace`),
//! logs it, and answers only peers whose uid is root's or its own (`SO_PEERCRED`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hostkit_net::state::DirStats;
use hostkit_tun::pipeline::StageSnapshot;
use serde::{Deserialize, Serialize};

/// The protocol's version.
pub const VERSION: u32 = 1;
/// The longest request accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// A request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// [`VERSION`].
    pub version: u32,
    /// `stats` or `set`.
    pub op: String,
    /// `set`: the impairment specs (`[]`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair: Option<Vec<String>>,
    /// `set`: the impairment's filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impair_filter: Option<String>,
    /// `set`: the impairment's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `set`: start (or restart) a capture to this absolute path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcap: Option<PathBuf>,
    /// `set`: stop the capture.
    #[serde(default)]
    pub no_pcap: bool,
    /// `set`: keep super-packets whole in the capture.
    #[serde(default)]
    pub pcap_raw: bool,
    /// `set`: the capture's filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcap_filter: Option<String>,
}

/// A reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The relay's counters per direction.
    #[serde(default)]
    pub directions: Vec<DirStats>,
    /// The stages on the path and their counters.
    #[serde(default)]
    pub stages: Vec<StageSnapshot>,
}

/// The socket beside a state file.
pub fn socket_path(state: &Path) -> PathBuf {
    state.with_extension("sock")
}

/// The listening socket of a running relay; removed when dropped.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
}

impl Control {
    /// Listens at `path` (in the trusted run directory; a stale socket there is replaced).
    pub fn listen(path: PathBuf) -> std::io::Result<Control> {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(&path)?,
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} exists and is not a socket",
                    path.display()
                )));
            }
            Err(_) => {}
        }
        // Bound in the run directory, which is root's and writable by nobody else (mode 0700
        // when hostkit made it; an existing one may be 0755). Until its mode is narrowed to
        // 0600 just below, the socket has what the umask leaves; what keeps others out either
        // way is the `SO_PEERCRED` check on every connection.
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Control { listener, path })
    }

    /// The descriptor to wait on.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the pending connections (bounded) and answers each with `handle`.
    pub fn serve(&self, mut handle: impl FnMut(Request) -> Reply) {
        for _ in 0..16 {
            let Ok((stream, _)) = self.listener.accept() else {
                return;
            };
            let _ = answer(stream, &mut handle);
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer(stream: UnixStream, handle: &mut impl FnMut(Request) -> Reply) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let reply = match peer_allowed(&stream) {
        Err(why) => refuse(why),
        Ok(()) => {
            let mut line = String::new();
            let mut reader = BufReader::new((&stream).take(MAX_REQUEST));
            match reader.read_line(&mut line) {
                Err(e) => refuse(format!("cannot read the request: {e}")),
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Err(e) => refuse(format!("not a request: {e}")),
                    Ok(r) if r.version != VERSION => refuse(format!(
                        "protocol version {} asked, this relay speaks {VERSION}",
                        r.version
                    )),
                    Ok(r) => handle(r),
                },
            }
        }
    };
    let mut text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    text.push('\n');
    (&stream).write_all(text.as_bytes())
}

fn refuse(error: String) -> Reply {
    Reply {
        ok: false,
        error: Some(error),
        ..Reply::default()
    }
}

/// Only root, or the relay's own user, may control it.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("cannot tell who is asking: {e}"))?;
    if hostkit_net::trusted_uid(cred.uid()) {
        Ok(())
    } else {
        Err(format!("uid {} may not control this relay", cred.uid()))
    }
}

/// Sends `request` to the relay listening at `path` and returns its reply.
pub fn ask(path: &Path, request: &Request) -> anyhow::Result<Reply> {
    use anyhow::Context;
    let stream = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach the relay's control socket {} (is the relay running?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    (&stream).write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new((&stream).take(16 * 1024 * 1024))
        .read_line(&mut line)
        .context("read the relay's reply")?;
    serde_json::from_str(&line).with_context(|| format!("the relay answered garbage: {line:?}"))
}
