//! The DATA body reader: dot-unstuffing, bare CR or LF normalised to CRLF, and
//! an end only on a wire `CRLF . CRLF` (no SMTP smuggling). It also enforces
//! the size limit and RFC 5322's 998-octet line limit without stopping early:
//! the client's data is always read to its end so the session stays in sync.
//! With a budget (`with_budget`), a body that grows past its reservation
//! grows the reservation, or is dropped when the server's memory budget
//! has no room left.

use super::limits::Reservation;

/// RFC 5322 §2.1.1.
pub const MAX_LINE_OCTETS: usize = 998;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After a wire CRLF (or at the start): a `.` here is special.
    LineStart,
    /// Inside a line, or after a bare CR/LF where `.` is ordinary.
    Mid,
    /// A CR was seen; is it followed by LF?
    Cr,
    /// A `.` at the start of a line.
    Dot,
    /// `.` then CR at the start of a line: the end if LF follows.
    DotCr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    TooBig,
    LineTooLong,
    /// Past its reservation, and the in-flight budget had no more room.
    NoRoom,
}

/// How much a reservation grows by when a body passes it; also what a
/// message without a declared SIZE reserves first.
pub const RESERVATION_STEP: u64 = 256 * 1024;

pub struct DataReader {
    state: State,
    max_size: u64,
    size: u64,
    line_len: usize,
    too_big: bool,
    long_line: bool,
    /// The memory this body may take; `None`: no budget.
    budget: Option<Reservation>,
    no_room: bool,
}

impl DataReader {
    pub fn new(max_size: u64) -> Self {
        Self {
            state: State::LineStart,
            max_size,
            size: 0,
            line_len: 0,
            too_big: false,
            long_line: false,
            budget: None,
            no_room: false,
        }
    }

    /// Counts the body against `reservation`, which the reader keeps (and
    /// gives back when it is dropped).
    pub fn with_budget(mut self, reservation: Reservation) -> Self {
        self.budget = Some(reservation);
        self
    }

    /// Appends the message bytes found in `input` to `out`. Returns how many
    /// input bytes were consumed and whether the end marker was reached (the
    /// bytes after it are not consumed).
    pub fn ingest(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::LineStart if b == b'.' => self.state = State::Dot,
                State::Mid | State::LineStart => {
                    if b == b'\r' {
                        self.state = State::Cr;
                    } else if b == b'\n' {
                        self.newline(false, out);
                    } else {
                        // Copy up to the next CR or LF in one go.
                        let rest = &input[i..];
                        let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                        self.push(&rest[..end], out);
                        self.state = State::Mid;
                        i += end;
                        continue;
                    }
                }
                State::Cr => {
                    if b == b'\n' {
                        self.newline(true, out);
                    } else {
                        // A bare CR ends a line, but not a dot-line; look at b again.
                        self.newline(false, out);
                        continue;
                    }
                }
                State::Dot => {
                    if b == b'\r' {
                        self.state = State::DotCr;
                    } else {
                        // The leading dot was stuffing: drop it.
                        self.state = State::Mid;
                        continue;
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        return (i + 1, true);
                    }
                    // ".\r" then something else: an unstuffed line ended by a bare CR.
                    self.newline(false, out);
                    continue;
                }
            }
            i += 1;
        }
        (i, false)
    }

    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.line_len += bytes.len();
        if self.line_len > MAX_LINE_OCTETS {
            self.long_line = true;
        }
        self.append(bytes, out);
    }

    fn append(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.size += bytes.len() as u64;
        if self.size > self.max_size {
            if !self.too_big {
                self.too_big = true;
                out.clear();
                out.shrink_to_fit();
            }
        } else if !self.no_room {
            if self.room_for(self.size) {
                out.extend_from_slice(bytes);
            } else {
                self.no_room = true;
                out.clear();
                out.shrink_to_fit();
            }
        }
    }

    /// Whether the reservation covers `size` bytes, growing it if needed.
    fn room_for(&mut self, size: u64) -> bool {
        match &mut self.budget {
            None => true,
            Some(r) if size <= r.bytes() => true,
            Some(r) => {
                let ahead = size.saturating_add(RESERVATION_STEP).min(self.max_size);
                r.grow_to(ahead) || r.grow_to(size)
            }
        }
    }

    fn newline(&mut self, wire_crlf: bool, out: &mut Vec<u8>) {
        self.append(b"\r\n", out);
        self.line_len = 0;
        self.state = if wire_crlf {
            State::LineStart
        } else {
            State::Mid
        };
    }

    /// What is wrong with the message, once the end was reached.
    pub fn finish(&self) -> Result<u64, DataError> {
        if self.too_big {
            Err(DataError::TooBig)
        } else if self.no_room {
            Err(DataError::NoRoom)
        } else if self.long_line {
            Err(DataError::LineTooLong)
        } else {
            Ok(self.size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> (Vec<u8>, bool, usize) {
        let mut r = DataReader::new(1 << 20);
        let mut out = Vec::new();
        let (used, done) = r.ingest(input, &mut out);
        (out, done, used)
    }

    #[test]
    fn unstuffs_and_ends_on_crlf_dot_crlf() {
        let (out, done, used) = read(b"a\r\n..b\r\n.c\r\n.\r\nNEXT");
        assert!(done);
        assert_eq!(out, b"a\r\n.b\r\nc\r\n");
        assert_eq!(used, 15);
    }

    #[test]
    fn empty_message() {
        let (out, done, _) = read(b".\r\n");
        assert!(done);
        assert!(out.is_empty());
    }

    #[test]
    fn smuggling_sequences_do_not_end_the_message() {
        for attempt in [
            &b"a\n.\nb"[..],
            b"a\r.\r\nb",
            b"a\n.\r\nb",
            b"a\r\n.\nb",
            b"a\r\n.\rb",
        ] {
            let (out, done, _) = read(attempt);
            assert!(
                !done,
                "{:?} ended the message",
                String::from_utf8_lossy(attempt)
            );
            // Every line break in the output is a CRLF.
            let text = String::from_utf8(out).unwrap();
            assert_eq!(
                text.matches('\n').count(),
                text.matches("\r\n").count(),
                "{text:?}"
            );
            assert_eq!(
                text.matches('\r').count(),
                text.matches("\r\n").count(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn split_across_reads() {
        let mut r = DataReader::new(1 << 20);
        let mut out = Vec::new();
        let input = b"line one\r\n..two\r\n.\r\n";
        for b in input.iter() {
            let (_, done) = r.ingest(std::slice::from_ref(b), &mut out);
            if done {
                break;
            }
        }
        assert_eq!(out, b"line one\r\n.two\r\n");
    }

    #[test]
    fn line_limit_is_998_octets() {
        let mut ok = vec![b'x'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        let mut r = DataReader::new(1 << 20);
        let mut out = Vec::new();
        assert!(r.ingest(&ok, &mut out).1);
        assert!(r.finish().is_ok());

        let mut long = vec![b'x'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        let mut r = DataReader::new(1 << 20);
        assert!(r.ingest(&long, &mut out).1);
        assert_eq!(r.finish(), Err(DataError::LineTooLong));
    }

    #[test]
    fn a_body_past_its_reservation_grows_it_or_is_dropped() {
        use crate::smtp::limits::InflightBudget;
        let budget = InflightBudget::new(RESERVATION_STEP + 100);
        let mut r = DataReader::new(1 << 20).with_budget(budget.try_reserve(10).unwrap());
        let mut out = Vec::new();
        assert!(r.ingest(b"0123456789abc\r\n.\r\n", &mut out).1);
        assert_eq!(r.finish(), Ok(15));
        // Grown once, at the 13th octet, by a step ahead.
        assert_eq!(budget.in_use(), 13 + RESERVATION_STEP);
        drop(r);
        assert_eq!(budget.in_use(), 0);

        let _other = budget.try_reserve(RESERVATION_STEP).unwrap();
        let mut r = DataReader::new(1 << 20).with_budget(budget.try_reserve(10).unwrap());
        let mut out = Vec::new();
        let (_, done) = r.ingest(&[b'x'; 200], &mut out);
        assert!(!done);
        assert!(r.ingest(b"\r\n.\r\n", &mut out).1, "read to its end");
        assert_eq!(r.finish(), Err(DataError::NoRoom));
        assert!(out.is_empty());
    }

    #[test]
    fn size_limit_reads_to_the_end() {
        let mut r = DataReader::new(10);
        let mut out = Vec::new();
        let (_, done) = r.ingest(b"0123456789abc\r\n.\r\n", &mut out);
        assert!(done);
        assert_eq!(r.finish(), Err(DataError::TooBig));
        assert!(out.is_empty());
    }
}
