//! Raw RESP connections for the one read that moves megabytes: a graph's
//! full state (`GET state`, `SYNC reset`).
//!
//! The `redis` crate parses every reply into a tree of owned values: for a
//! 10,000-node, 20,000-edge graph that is 30,000 bulk strings parsed by a
//! general combinator parser, then checked as UTF-8 one by one, then copied
//! into the response. Here the reply is read as a stream and each bulk string
//! is copied once, straight from the socket buffer into the response body.
//! Measured in BENCHMARKS.md (the `GET state` rows).
//!
//! Plain TCP and Unix sockets, as the `redis` crate is built here (no TLS).

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Socket reads of this size keep system calls few for multi-megabyte replies.
const READ_BUFFER: usize = 256 * 1024;
/// Idle connections kept for reuse; more concurrent reads open more.
const MAX_IDLE: usize = 4;
/// Connecting and the handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("redis connection: {0}")]
    Io(#[from] io::Error),
    #[error("redis: {0}")]
    Server(String),
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
}

/// The start of one reply.
#[derive(Debug, PartialEq)]
pub enum Header {
    Simple(String),
    Error(String),
    Integer(i64),
    /// Length of the payload that follows; `None` is nil.
    Bulk(Option<usize>),
    /// Number of elements that follow; `None` is nil.
    Array(Option<usize>),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One raw RESP2 connection.
pub struct Conn {
    stream: BufReader<Box<dyn Io>>,
    line: Vec<u8>,
}

impl Conn {
    /// Writes `commands` as one pipeline.
    pub async fn send(&mut self, commands: &[&[&[u8]]]) -> io::Result<()> {
        let mut out = Vec::with_capacity(256);
        for args in commands {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for arg in *args {
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
        }
        let stream = self.stream.get_mut();
        stream.write_all(&out).await?;
        stream.flush().await
    }

    /// Reads the header line of the next reply (or array element).
    pub async fn header(&mut self) -> Result<Header, RespError> {
        self.line.clear();
        let n = self.stream.read_until(b'\n', &mut self.line).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        let line = self
            .line
            .strip_suffix(b"\r\n")
            .ok_or_else(|| RespError::Protocol("line without CRLF".into()))?;
        let (kind, rest) = line
            .split_first()
            .ok_or_else(|| RespError::Protocol("empty line".into()))?;
        let text = || String::from_utf8_lossy(rest).into_owned();
        let length = || -> Result<Option<usize>, RespError> {
            match text().parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(n) if n >= 0 => Ok(Some(n as usize)),
                _ => Err(RespError::Protocol(format!("bad length {:?}", text()))),
            }
        };
        Ok(match kind {
            b'+' => Header::Simple(text()),
            b'-' => Header::Error(text()),
            b':' => Header::Integer(
                text()
                    .parse()
                    .map_err(|_| RespError::Protocol(format!("bad integer {:?}", text())))?,
            ),
            b'$' => Header::Bulk(length()?),
            b'*' => Header::Array(length()?),
            other => {
                return Err(RespError::Protocol(format!(
                    "unknown reply type {:?}",
                    char::from(*other)
                )));
            }
        })
    }

    /// Appends a bulk string's `len` payload bytes to `out`.
    pub async fn bulk_into(&mut self, len: usize, out: &mut Vec<u8>) -> Result<(), RespError> {
        let start = out.len();
        out.resize(start + len, 0);
        self.stream.read_exact(&mut out[start..]).await?;
        let mut crlf = [0u8; 2];
        self.stream.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            return Err(RespError::Protocol("bulk string without CRLF".into()));
        }
        Ok(())
    }

    /// The next reply, which must be a bulk string (nil reads as empty).
    pub async fn bulk(&mut self) -> Result<Vec<u8>, RespError> {
        match self.header().await? {
            Header::Bulk(Some(len)) => {
                let mut out = Vec::with_capacity(len);
                self.bulk_into(len, &mut out).await?;
                Ok(out)
            }
            Header::Bulk(None) => Ok(Vec::new()),
            other => Err(unexpected(other)),
        }
    }

    /// The next reply, which must be a status such as `+OK` or `+QUEUED`.
    pub async fn status(&mut self) -> Result<String, RespError> {
        match self.header().await? {
            Header::Simple(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// The next reply, which must be an array; its length.
    pub async fn array(&mut self) -> Result<usize, RespError> {
        match self.header().await? {
            Header::Array(Some(n)) => Ok(n),
            Header::Array(None) => Ok(0),
            other => Err(unexpected(other)),
        }
    }
}

/// A server error becomes [`RespError::Server`]; anything else out of place
/// is a protocol error.
pub fn unexpected(header: Header) -> RespError {
    match header {
        Header::Error(message) => RespError::Server(message),
        other => RespError::Protocol(format!("{other:?}")),
    }
}

/// Opens raw connections to one Redis server and keeps a few idle ones.
pub struct BulkReader {
    addr: ConnectionAddr,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    idle: Mutex<Vec<Conn>>,
}

impl BulkReader {
    pub fn new(info: &ConnectionInfo) -> BulkReader {
        let settings = info.redis_settings();
        BulkReader {
            addr: info.addr().clone(),
            username: settings.username().map(str::to_string),
            password: settings.password().map(str::to_string),
            db: settings.db(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection, or a new one. Give it back with [`Self::checkin`]
    /// once its replies are fully read; on an error, drop it instead.
    pub async fn checkout(&self) -> Result<Conn, RespError> {
        let reused = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match reused {
            Some(conn) => Ok(conn),
            None => tokio::time::timeout(CONNECT_TIMEOUT, self.open())
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?,
        }
    }

    pub fn checkin(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }

    async fn open(&self) -> Result<Conn, RespError> {
        let stream: Box<dyn Io> = match &self.addr {
            ConnectionAddr::Tcp(host, port) => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
            ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            _ => return Err(RespError::Protocol("TLS is not built into graphq".into())),
        };
        let mut conn = Conn {
            stream: BufReader::with_capacity(READ_BUFFER, stream),
            line: Vec::with_capacity(64),
        };
        let db = self.db.to_string();
        let mut handshake: Vec<Vec<&[u8]>> = Vec::new();
        match (&self.username, &self.password) {
            (Some(user), Some(pass)) => {
                handshake.push(vec![b"AUTH", user.as_bytes(), pass.as_bytes()])
            }
            (None, Some(pass)) => handshake.push(vec![b"AUTH", pass.as_bytes()]),
            _ => {}
        }
        if self.db != 0 {
            handshake.push(vec![b"SELECT", db.as_bytes()]);
        }
        if !handshake.is_empty() {
            let commands: Vec<&[&[u8]]> = handshake.iter().map(Vec::as_slice).collect();
            conn.send(&commands).await?;
            for _ in &commands {
                conn.status().await?;
            }
        }
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn_over(bytes: &'static [u8]) -> Conn {
        let (client, mut server) = tokio::io::duplex(1024);
        // The bytes stay readable after `server` is dropped; then EOF.
        tokio::spawn(async move {
            let _ = server.write_all(bytes).await;
        });
        Conn {
            stream: BufReader::with_capacity(16, Box::new(client)),
            line: Vec::new(),
        }
    }

    #[tokio::test]
    async fn reads_every_reply_kind() {
        let mut conn =
            conn_over(b"+OK\r\n-ERR no\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$0\r\n\r\n");
        assert_eq!(conn.status().await.unwrap(), "OK");
        assert_eq!(conn.header().await.unwrap(), Header::Error("ERR no".into()));
        assert_eq!(conn.header().await.unwrap(), Header::Integer(42));
        assert_eq!(conn.bulk().await.unwrap(), b"hello");
        assert_eq!(conn.bulk().await.unwrap(), b"");
        assert_eq!(conn.array().await.unwrap(), 2);
        assert_eq!(conn.bulk().await.unwrap(), b"");
    }

    #[tokio::test]
    async fn bulk_strings_larger_than_the_buffer_are_copied_whole() {
        let mut conn = conn_over(b"$40\r\n0123456789012345678901234567890123456789\r\n");
        let mut out = b"[".to_vec();
        let Header::Bulk(Some(len)) = conn.header().await.unwrap() else {
            panic!("not a bulk string")
        };
        conn.bulk_into(len, &mut out).await.unwrap();
        assert_eq!(out, b"[0123456789012345678901234567890123456789");
    }

    #[tokio::test]
    async fn malformed_replies_are_errors_not_panics() {
        for bytes in [
            &b"?what\r\n"[..],
            b"$abc\r\n",
            b"+no crlf\n",
            b"$3\r\nabcXY",
            b"*-7\r\n",
            b"",
        ] {
            let mut conn = conn_over(bytes);
            let got = match conn.header().await {
                Ok(Header::Bulk(Some(len))) => conn.bulk_into(len, &mut Vec::new()).await,
                Ok(other) => Err(unexpected(other)),
                Err(err) => Err(err),
            };
            assert!(got.is_err(), "{bytes:?} was accepted");
        }
    }
}
