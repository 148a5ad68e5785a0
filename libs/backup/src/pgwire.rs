//! The few pieces of the PostgreSQL replication protocol the archiver needs: a trust login
//! over the local socket with `replication=true`, simple queries (IDENTIFY_SYSTEM, slot
//! commands), and the CopyBoth stream of START_REPLICATION. Message framing comes from
//! the `postgres-protocol` crate.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("server: {message} ({code})")]
    Server { code: String, message: String },
    #[error("{0}")]
    Protocol(String),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Conn {
    stream: UnixStream,
    buf: BytesMut,
}

/// A message of the replication stream.
#[derive(Debug)]
pub enum Incoming {
    XLog {
        start: u64,
        data: Bytes,
    },
    Keepalive {
        reply: bool,
    },
    /// The server ended the stream (its timeline ended).
    Done,
}

fn server_error(body: &backend::ErrorResponseBody) -> WireError {
    let (mut code, mut message) = (String::new(), String::new());
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let v = String::from_utf8_lossy(f.value_bytes()).to_string();
        match f.type_() {
            b'C' => code = v,
            b'M' => message = v,
            _ => {}
        }
    }
    WireError::Server { code, message }
}

/// `CopyBothResponse` ('W'), which `postgres-protocol` does not parse.
const COPY_BOTH: u8 = b'W';

enum Msg {
    Pg(backend::Message),
    CopyBoth,
}

async fn read_message(stream: &mut (impl AsyncReadExt + Unpin), buf: &mut BytesMut) -> Result<Msg, WireError> {
    loop {
        if buf.len() >= 5 && buf[0] == COPY_BOTH {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() > len {
                buf.advance(1 + len);
                return Ok(Msg::CopyBoth);
            }
        } else if let Some(m) = backend::Message::parse(buf)? {
            return Ok(Msg::Pg(m));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(WireError::Protocol("server closed the connection".into()));
        }
    }
}

impl Conn {
    /// Logs in over the Unix socket `socket` (its full path) as a physical replication
    /// connection.
    pub async fn connect(socket: &Path, user: &str, application_name: &str) -> Result<Self, WireError> {
        let stream = UnixStream::connect(socket).await?;
        let mut c = Conn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", user),
                ("replication", "true"),
                ("application_name", application_name),
            ],
            &mut out,
        )?;
        c.stream.write_all(&out).await?;
        loop {
            match read_message(&mut c.stream, &mut c.buf).await? {
                Msg::Pg(
                    backend::Message::AuthenticationOk
                    | backend::Message::ParameterStatus(_)
                    | backend::Message::BackendKeyData(_)
                    | backend::Message::NoticeResponse(_),
                ) => {}
                Msg::Pg(backend::Message::ReadyForQuery(_)) => return Ok(c),
                Msg::Pg(backend::Message::ErrorResponse(b)) => return Err(server_error(&b)),
                _ => {
                    return Err(WireError::Protocol(
                        "the server wants a password (only trust is supported)".into(),
                    ))
                }
            }
        }
    }

    /// Runs one replication command; returns its rows as text.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, WireError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.stream.write_all(&out).await?;
        let mut rows = Vec::new();
        let mut err = None;
        loop {
            match read_message(&mut self.stream, &mut self.buf).await? {
                Msg::Pg(backend::Message::DataRow(body)) => {
                    let buf = body.buffer();
                    let row = body
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).to_string())))
                        .collect()?;
                    rows.push(row);
                }
                Msg::Pg(backend::Message::ErrorResponse(b)) => err = Some(server_error(&b)),
                Msg::Pg(backend::Message::ReadyForQuery(_)) => break,
                _ => {}
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Starts streaming; returns the reader of the stream and the writer for feedback.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: u64,
        timeline: u32,
    ) -> Result<(tokio::sync::mpsc::Receiver<Result<Incoming, WireError>>, Feedback), WireError> {
        let mut out = BytesMut::new();
        let sql = format!(
            "START_REPLICATION SLOT {slot} PHYSICAL {} TIMELINE {timeline}",
            crate::fmt_lsn(start)
        );
        frontend::query(&sql, &mut out)?;
        self.stream.write_all(&out).await?;
        loop {
            match read_message(&mut self.stream, &mut self.buf).await? {
                Msg::CopyBoth => break,
                Msg::Pg(backend::Message::ErrorResponse(b)) => return Err(server_error(&b)),
                Msg::Pg(backend::Message::NoticeResponse(_)) => {}
                _ => return Err(WireError::Protocol("unexpected answer to START_REPLICATION".into())),
            }
        }
        let (mut rd, wr) = self.stream.into_split();
        let mut buf = self.buf;
        // Bounded: when uploads fall behind, the reader stops reading and the server's
        // slot keeps the WAL.
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let msg = match read_message(&mut rd, &mut buf).await {
                    Ok(Msg::Pg(backend::Message::CopyData(body))) => parse_copy(body.into_bytes()),
                    Ok(Msg::Pg(backend::Message::CopyDone)) => Ok(Incoming::Done),
                    Ok(Msg::Pg(backend::Message::ErrorResponse(b))) => Err(server_error(&b)),
                    Ok(_) => continue,
                    Err(e) => Err(e),
                };
                let end = msg.is_err();
                if tx.send(msg).await.is_err() || end {
                    return;
                }
            }
        });
        Ok((rx, Feedback { wr }))
    }
}

fn parse_copy(mut b: Bytes) -> Result<Incoming, WireError> {
    let short = || WireError::Protocol("short replication message".into());
    if b.is_empty() {
        return Err(short());
    }
    match b.get_u8() {
        b'w' if b.len() >= 24 => {
            let start = b.get_u64();
            b.advance(16);
            Ok(Incoming::XLog { start, data: b })
        }
        b'k' if b.len() >= 17 => {
            b.advance(16);
            Ok(Incoming::Keepalive { reply: b.get_u8() != 0 })
        }
        b'w' | b'k' => Err(short()),
        t => Err(WireError::Protocol(format!("unknown replication message {t:?}"))),
    }
}

/// The writing half of a replication connection: standby status updates.
pub struct Feedback {
    wr: tokio::net::unix::OwnedWriteHalf,
}

impl Feedback {
    /// Tells the server what was received and what is durable (flushed = archived).
    pub async fn send(&mut self, received: u64, flushed: u64) -> Result<(), WireError> {
        // Microseconds since 2000-01-01, PostgreSQL's epoch.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
            - 946_684_800_000_000;
        let mut msg = BytesMut::with_capacity(34);
        msg.put_u8(b'r');
        msg.put_u64(received);
        msg.put_u64(flushed);
        msg.put_u64(flushed);
        msg.put_i64(now);
        msg.put_u8(0);
        let mut out = BytesMut::new();
        frontend::CopyData::new(&msg[..])?.write(&mut out);
        self.wr.write_all(&out).await?;
        Ok(())
    }
}
