//! Decoder for `Transfer-Encoding: chunked` source bodies (Liquidsoap's and Icecast 2.5's PUT).
//! httparse parses each chunk-size line; this state machine walks sizes, data and CRLFs across
//! arbitrary read boundaries. Pure code over bytes.

use bytes::{Buf as _, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkedError {
    Malformed(&'static str),
}

#[derive(Debug, Default)]
pub(crate) struct ChunkedDecoder {
    state: State,
    buf: BytesMut,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    pub(crate) fn new() -> ChunkedDecoder {
        ChunkedDecoder::default()
    }

    /// True once the terminating zero-size chunk and trailers were read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds received bytes and appends decoded body data to `out`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<Bytes>) -> Result<(), ChunkedError> {
        self.buf.extend_from_slice(input);
        loop {
            match self.state {
                State::Size => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.advance(used);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() > 1024 => {
                        return Err(ChunkedError::Malformed("chunk size line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(()),
                    Err(_) => return Err(ChunkedError::Malformed("invalid chunk size")),
                },
                State::Data(left) => {
                    if self.buf.is_empty() {
                        return Ok(());
                    }
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    out.push(self.buf.split_to(n).freeze());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    if self.buf.len() < 2 {
                        return Ok(());
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(ChunkedError::Malformed("chunk data not followed by CRLF"));
                    }
                    self.buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    // Trailer lines until an empty line; their content is ignored.
                    let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                        if self.buf.len() > 8192 {
                            return Err(ChunkedError::Malformed("trailers too long"));
                        }
                        return Ok(());
                    };
                    let line_empty = nl == 0 || (nl == 1 && self.buf[0] == b'\r');
                    self.buf.advance(nl + 1);
                    if line_empty {
                        self.state = State::Done;
                    }
                }
                State::Done => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        for p in input.chunks(piece.max(1)) {
            d.feed(p, &mut out).expect("valid");
        }
        (out.concat(), d.is_done())
    }

    #[test]
    fn decodes_across_any_boundary() {
        let body =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for piece in 1..body.len() {
            let (data, done) = decode_in_pieces(body, piece);
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
            assert!(done);
        }
    }

    #[test]
    fn refuses_garbage() {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert!(d.feed(b"zz\r\n", &mut out).is_err());
        let mut d = ChunkedDecoder::new();
        assert!(d.feed(b"2\r\nabXX", &mut out).is_err());
        let mut d = ChunkedDecoder::new();
        assert!(d.feed(&[b'1'; 2000], &mut out).is_err());
    }
}
