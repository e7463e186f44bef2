//! Framed I/O for one SMTP connection: command lines with a length cap, DATA
//! bodies, BDAT chunks, and buffered replies flushed before every blocking
//! read (so pipelined commands get their replies in one write).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::data::DataReader;
use super::reply::Reply;

/// Reads during DATA and BDAT: large, for throughput.
const READ_CHUNK: usize = 16 * 1024;
/// Reads of command lines: small, since a session mostly sits idle
/// between commands and 10,000 of them must fit in little memory.
const LINE_CHUNK: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A whole line, terminator included.
    Complete(Vec<u8>),
    /// Longer than allowed; it was read to its end and dropped.
    TooLong,
    /// The client closed the connection.
    Eof,
}

pub struct Connection<S> {
    stream: S,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            input: Vec::with_capacity(LINE_CHUNK),
            output: Vec::with_capacity(1024),
        }
    }

    /// The stream, dropping anything the client sent ahead (after STARTTLS
    /// such bytes are an injection attempt, never commands).
    pub fn into_inner(self) -> S {
        self.stream
    }

    pub fn queue(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        self.stream.flush().await
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }

    /// Reads more input (room for at least `chunk` octets), flushing
    /// pending replies first. `false` on EOF.
    async fn fill(&mut self, chunk: usize) -> io::Result<bool> {
        self.flush().await?;
        if self.input.is_empty() && self.input.capacity() > 4 * LINE_CHUNK && chunk == LINE_CHUNK {
            // Back to commands after a message: give the big buffer back
            // before what may be a long wait.
            self.input = Vec::with_capacity(LINE_CHUNK);
        }
        self.input.reserve(chunk);
        Ok(self.stream.read_buf(&mut self.input).await? > 0)
    }

    /// The next line of at most `max` octets (terminator included).
    pub async fn read_line(&mut self, max: usize) -> io::Result<Line> {
        let mut skipping = false;
        let mut scanned = 0;
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.input[scanned..]) {
                let end = scanned + pos + 1;
                let line: Vec<u8> = self.input.drain(..end).collect();
                if skipping || line.len() > max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(line));
            }
            if self.input.len() > max {
                // Too long already: drop what we have and wait for its end.
                skipping = true;
                self.input.clear();
            }
            scanned = self.input.len();
            if !self.fill(LINE_CHUNK).await? {
                return Ok(Line::Eof);
            }
        }
    }

    /// Feeds input to `reader` until the end of DATA. `false` on EOF.
    pub async fn read_data(
        &mut self,
        reader: &mut DataReader,
        out: &mut Vec<u8>,
    ) -> io::Result<bool> {
        loop {
            if !self.input.is_empty() {
                let (used, done) = reader.ingest(&self.input, out);
                self.input.drain(..used);
                if done {
                    return Ok(true);
                }
            }
            if !self.fill(READ_CHUNK).await? {
                return Ok(false);
            }
        }
    }

    /// Reads exactly `len` octets (a BDAT chunk), appending them to `out`
    /// unless `out` is `None` (a refused chunk is read and discarded).
    pub async fn read_chunk(
        &mut self,
        mut len: usize,
        mut out: Option<&mut Vec<u8>>,
    ) -> io::Result<bool> {
        loop {
            let take = len.min(self.input.len());
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&self.input[..take]);
            }
            self.input.drain(..take);
            len -= take;
            if len == 0 {
                return Ok(true);
            }
            if !self.fill(READ_CHUNK).await? {
                return Ok(false);
            }
        }
    }
}
