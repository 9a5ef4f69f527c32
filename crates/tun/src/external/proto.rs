//! The processor protocol, version 1: messages on a Unix stream socket (`docs/processors.md`
//! is its specification; this is its one implementation on the relay's side).
//!
//! Every message is `u32 length` (of what follows), `u8 type`, body; integers are big-endian.
//!
//! | type | from | body |
//! |---|---|---|
//! | 1 `HELLO` | relay | `"HKPR"`, `u16 version`, `key=value` lines (UTF-8) |
//! | 1 `HELLO` | processor | `"HKPR"`, `u16 version`, `u32 batch`, `u32 window`, name (UTF-8) |
//! | 2 `PACKETS` | relay | `u32 count`, then per packet: `u64 id`, `u8 direction`, `u8 0`, `u16 0`, `u64 timestamp_ns`, `u32 length`, the packet |
//! | 3 `VERDICTS` | processor | `u32 count`, then per verdict: `u64 id`, `u8 action`, `u8 direction`, `u16 0`, `u32 length`, bytes |

use crate::pipeline::Direction;

/// The protocol version this relay speaks.
pub const VERSION: u16 = 1;
/// The first bytes of every hello.
pub const MAGIC: &[u8; 4] = b"HKPR";
/// Largest message either side may send (length field), 16 MiB.
pub const MAX_MESSAGE: usize = 1 << 24;
/// Most packets the relay puts in one `PACKETS` message (a processor's `batch` is at most this).
pub const MAX_BATCH: u32 = 1024;
/// Most packets awaiting verdicts at once (a processor's `window` is at most this).
pub const MAX_WINDOW: u32 = 65_536;
/// Largest packet a `replace` or `inject` may carry.
pub const MAX_PACKET: usize = 65_535;

/// Message types.
pub const HELLO: u8 = 1;
/// Packets, relay to processor.
pub const PACKETS: u8 = 2;
/// Verdicts, processor to relay.
pub const VERDICTS: u8 = 3;

/// Bytes before each packet in a `PACKETS` message.
pub const PACKET_HEADER: usize = 24;
/// Bytes before each verdict's bytes in a `VERDICTS` message.
pub const VERDICT_HEADER: usize = 16;

/// What a processor says about a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// 0: on, unchanged.
    Forward,
    /// 1: no further.
    Drop,
    /// 2: on, as these bytes.
    Replace(Vec<u8>),
    /// 3: write these bytes into the device at the end of `direction` (besides the packet's
    /// own verdict, which is still to come).
    Inject(Direction, Vec<u8>),
}

/// One verdict record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The packet's id.
    pub id: u64,
    /// What to do.
    pub action: Action,
}

/// The processor's answer to the hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloReply {
    /// The version it speaks.
    pub version: u16,
    /// Most packets per `PACKETS` message (1: one at a time).
    pub batch: u32,
    /// Most packets awaiting its verdicts at once (1: lockstep).
    pub window: u32,
    /// Its name, for `tun status` (may be empty).
    pub name: String,
}

/// The relay's hello: magic, version, options as `key=value` lines.
pub fn encode_hello(options: &[(&str, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&VERSION.to_be_bytes());
    for (k, v) in options {
        body.extend_from_slice(format!("{k}={v}\n").as_bytes());
    }
    message(HELLO, &body)
}

/// A message of `kind` with `body`.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(5 + body.len());
    m.extend_from_slice(&(body.len() as u32 + 1).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// Reads the processor's hello from a message body.
pub fn parse_hello_reply(kind: u8, body: &[u8]) -> Result<HelloReply, String> {
    if kind != HELLO {
        return Err(format!(
            "its first message is of type {kind}, not a hello (1)"
        ));
    }
    if body.len() < 14 || &body[..4] != MAGIC {
        return Err("its hello does not start with \"HKPR\", version, batch and window".into());
    }
    let version = u16::from_be_bytes([body[4], body[5]]);
    let batch = u32::from_be_bytes(body[6..10].try_into().expect("4 bytes"));
    let window = u32::from_be_bytes(body[10..14].try_into().expect("4 bytes"));
    let name = std::str::from_utf8(&body[14..])
        .map_err(|_| "its name is not UTF-8".to_string())?
        .trim()
        .to_string();
    if version != VERSION {
        return Err(format!(
            "it speaks protocol version {version}; this relay speaks version {VERSION}"
        ));
    }
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(format!("batch {batch} is out of range 1..={MAX_BATCH}"));
    }
    if !(batch..=MAX_WINDOW).contains(&window) {
        return Err(format!(
            "window {window} is out of range {batch}..={MAX_WINDOW} (at least its batch)"
        ));
    }
    if name.len() > 64 || name.chars().any(char::is_control) {
        return Err("its name is longer than 64 bytes or has control characters".into());
    }
    Ok(HelloReply {
        version,
        batch,
        window,
        name,
    })
}

/// One packet for a `PACKETS` message.
pub struct Outgoing<'a> {
    /// Its id.
    pub id: u64,
    /// Which way it travels.
    pub direction: Direction,
    /// When the relay read it, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// The IP packet.
    pub data: &'a [u8],
}

/// Appends a `PACKETS` message with `packets` to `buf`.
pub fn encode_packets<'a>(buf: &mut Vec<u8>, packets: impl ExactSizeIterator<Item = Outgoing<'a>>) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0, 0, 0, PACKETS]);
    buf.extend_from_slice(&(packets.len() as u32).to_be_bytes());
    for p in packets {
        buf.extend_from_slice(&p.id.to_be_bytes());
        buf.push(p.direction.index() as u8);
        buf.extend_from_slice(&[0, 0, 0]);
        buf.extend_from_slice(&p.timestamp_ns.to_be_bytes());
        buf.extend_from_slice(&(p.data.len() as u32).to_be_bytes());
        buf.extend_from_slice(p.data);
    }
    let len = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Reads a `VERDICTS` message body; any departure from the format is an error, in words.
pub fn parse_verdicts(body: &[u8]) -> Result<Vec<Verdict>, String> {
    let count = body
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
        .ok_or("a verdicts message shorter than its count")?;
    if count == 0 {
        return Err("a verdicts message with no verdict".into());
    }
    let mut out = Vec::with_capacity(count.min(MAX_WINDOW) as usize);
    let mut at = 4;
    for n in 0..count {
        let h = body.get(at..at + VERDICT_HEADER).ok_or_else(|| {
            format!(
                "verdict {} of {count} is cut short (message too short)",
                n + 1
            )
        })?;
        let id = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
        let (action, dir) = (h[8], h[9]);
        if h[10..12] != [0, 0] {
            return Err(format!(
                "verdict for packet {id}: reserved bytes are not zero"
            ));
        }
        let len = u32::from_be_bytes(h[12..16].try_into().expect("4 bytes")) as usize;
        at += VERDICT_HEADER;
        let bytes = body
            .get(at..at + len)
            .ok_or_else(|| format!("verdict for packet {id}: {len} bytes announced, fewer sent"))?;
        at += len;
        let need_bytes = |what: &str| {
            if bytes.is_empty() || bytes.len() > MAX_PACKET {
                Err(format!(
                    "verdict for packet {id}: {what} with {len} bytes (1..={MAX_PACKET})"
                ))
            } else {
                Ok(bytes.to_vec())
            }
        };
        let no_bytes = |what: &str| {
            if len == 0 && dir == 0 {
                Ok(())
            } else {
                Err(format!(
                    "verdict for packet {id}: {what} with bytes or a direction"
                ))
            }
        };
        let action = match action {
            0 => no_bytes("forward").map(|_| Action::Forward)?,
            1 => no_bytes("drop").map(|_| Action::Drop)?,
            2 if dir == 0 => Action::Replace(need_bytes("replace")?),
            3 if dir <= 1 => {
                Action::Inject(Direction::from_index(dir.into()), need_bytes("inject")?)
            }
            2 | 3 => {
                return Err(format!(
                    "verdict for packet {id}: direction {dir} (0 or 1, and 0 for replace)"
                ));
            }
            other => {
                return Err(format!(
                    "verdict for packet {id}: unknown action {other} (0 forward, 1 drop, 2 replace, 3 inject)"
                ));
            }
        };
        out.push(Verdict { id, action });
    }
    if at != body.len() {
        return Err(format!(
            "{} bytes after the last of {count} verdicts",
            body.len() - at
        ));
    }
    Ok(out)
}

/// Splits a byte stream into messages.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
    start: usize,
}

impl Reader {
    /// Adds bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 1 << 20 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message (type, body), if any; an impossible length is an error.
    pub fn next_message(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(avail[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_MESSAGE {
            return Err(format!(
                "a message length of {len} bytes (1..={MAX_MESSAGE})"
            ));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let kind = avail[4];
        let body = avail[5..4 + len].to_vec();
        self.start += 4 + len;
        Ok(Some((kind, body)))
    }

    /// Whether part of a message is waiting for the rest.
    pub fn is_partial(&self) -> bool {
        self.start < self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(records: &[(u64, u8, u8, &[u8])]) -> Vec<u8> {
        let mut b = (records.len() as u32).to_be_bytes().to_vec();
        for (id, action, dir, bytes) in records {
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&[*action, *dir, 0, 0]);
            b.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            b.extend_from_slice(bytes);
        }
        b
    }

    #[test]
    fn verdicts_of_every_kind_are_read() {
        let body = verdicts(&[
            (1, 0, 0, b""),
            (2, 1, 0, b""),
            (3, 3, 1, b"answer"),
            (3, 2, 0, b"new"),
        ]);
        assert_eq!(
            parse_verdicts(&body).unwrap(),
            vec![
                Verdict {
                    id: 1,
                    action: Action::Forward
                },
                Verdict {
                    id: 2,
                    action: Action::Drop
                },
                Verdict {
                    id: 3,
                    action: Action::Inject(Direction::Backward, b"answer".to_vec())
                },
                Verdict {
                    id: 3,
                    action: Action::Replace(b"new".to_vec())
                },
            ]
        );
    }

    #[test]
    fn malformed_verdicts_are_refused_in_words() {
        let cases: &[(Vec<u8>, &str)] = &[
            (vec![0, 0, 0, 0], "no verdict"),
            (vec![0, 0], "shorter than its count"),
            (verdicts(&[(1, 9, 0, b"")]), "unknown action 9"),
            (verdicts(&[(1, 0, 0, b"x")]), "forward with bytes"),
            (verdicts(&[(1, 2, 0, b"")]), "replace with 0 bytes"),
            (verdicts(&[(1, 3, 2, b"x")]), "direction 2"),
            (verdicts(&[(1, 2, 1, b"x")]), "direction 1"),
            (
                {
                    let mut b = verdicts(&[(1, 0, 0, b"")]);
                    b.push(0);
                    b
                },
                "1 bytes after",
            ),
            (
                {
                    let mut b = verdicts(&[(1, 2, 0, b"abcd")]);
                    b.truncate(b.len() - 2);
                    b
                },
                "4 bytes announced",
            ),
            (
                (2u32.to_be_bytes())
                    .iter()
                    .copied()
                    .chain(verdicts(&[(1, 0, 0, b"")])[4..].iter().copied())
                    .collect(),
                "verdict 2 of 2 is cut short",
            ),
        ];
        for (body, needle) in cases {
            let err = parse_verdicts(body).unwrap_err();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn the_reader_splits_a_stream_at_any_boundary() {
        let mut stream = message(VERDICTS, b"first");
        stream.extend(message(HELLO, b""));
        stream.extend(message(PACKETS, &[7; 300]));
        for chunk in [1, 2, 5, 7, 1000] {
            let mut r = Reader::default();
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                r.push(c);
                while let Some(m) = r.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert!(!r.is_partial());
            assert_eq!(
                got,
                vec![
                    (VERDICTS, b"first".to_vec()),
                    (HELLO, vec![]),
                    (PACKETS, vec![7; 300])
                ],
                "chunks of {chunk}"
            );
        }
        let mut r = Reader::default();
        r.push(&[0, 0, 0, 0, 1]);
        assert!(r.next_message().unwrap_err().contains("length of 0"));
        let mut r = Reader::default();
        r.push(&[0x7f, 0, 0, 0]);
        assert!(
            r.next_message()
                .unwrap_err()
                .contains("length of 2130706432")
        );
    }

    #[test]
    fn packets_are_encoded_with_their_header() {
        let mut buf = Vec::new();
        let pkts = [(5u64, Direction::Backward, 123u64, &b"abc"[..])];
        encode_packets(
            &mut buf,
            pkts.iter().map(|(id, d, ts, data)| Outgoing {
                id: *id,
                direction: *d,
                timestamp_ns: *ts,
                data,
            }),
        );
        let mut want = (1 + 4 + PACKET_HEADER as u32 + 3).to_be_bytes().to_vec();
        want.push(PACKETS);
        want.extend(1u32.to_be_bytes());
        want.extend(5u64.to_be_bytes());
        want.extend([1, 0, 0, 0]);
        want.extend(123u64.to_be_bytes());
        want.extend(3u32.to_be_bytes());
        want.extend(b"abc");
        assert_eq!(buf, want);
    }

    #[test]
    fn hellos_are_checked() {
        let hello = |version: u16, batch: u32, window: u32, name: &str| {
            let mut b = MAGIC.to_vec();
            b.extend(version.to_be_bytes());
            b.extend(batch.to_be_bytes());
            b.extend(window.to_be_bytes());
            b.extend(name.as_bytes());
            b
        };
        assert_eq!(
            parse_hello_reply(HELLO, &hello(1, 64, 256, "drop-every-nth\n")).unwrap(),
            HelloReply {
                version: 1,
                batch: 64,
                window: 256,
                name: "drop-every-nth".into()
            }
        );
        for (kind, body, needle) in [
            (VERDICTS, hello(1, 1, 1, ""), "not a hello"),
            (
                HELLO,
                b"HKPX\0\x01\0\0\0\x01\0\0\0\x01".to_vec(),
                "does not start",
            ),
            (
                HELLO,
                hello(2, 1, 1, ""),
                "version 2; this relay speaks version 1",
            ),
            (HELLO, hello(1, 0, 1, ""), "batch 0"),
            (HELLO, hello(1, 8, 4, ""), "window 4"),
            (HELLO, hello(1, 1, 1, "\u{7}"), "control"),
        ] {
            let err = parse_hello_reply(kind, &body).unwrap_err();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
        let h = encode_hello(&[("dev0", "tun0".into()), ("timeout_ms", "100".into())]);
        assert_eq!(&h[4..10], &[HELLO, b'H', b'K', b'P', b'R', 0]);
        assert_eq!(&h[10..], b"\x01dev0=tun0\ntimeout_ms=100\n");
    }
}
