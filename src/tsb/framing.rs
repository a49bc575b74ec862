//! The response side of the HTTP/1.1 client: reading one response from a kept-alive
//! connection, strictly framed (RFC 9112 §6). The status line and header fields are parsed by
//! `httparse` (hyper's parser: zero-copy, bounded by a fixed array of fields); the body framing
//! on top of it is this module's own, strict where RFC 9112 lets a recipient choose:
//!
//! - `Transfer-Encoding` together with `Content-Length` is an error (RFC 9112 §6.1, §6.3 item 3:
//!   "ought to be handled as an error"), and so is `Transfer-Encoding` in an HTTP/1.0 response
//!   (§6.1: "MUST treat the message as if the framing is faulty").
//! - The only transfer coding accepted is `chunked`, alone: the module asks for none, so
//!   `gzip, chunked` (a coding it cannot undo) or `xchunkedx` is an error (§6.3 item 4: the
//!   final coding must be `chunked`; RFC 9110 §10.1.4).
//! - `Content-Length` must be digits only; several values (in one field or repeated fields) are
//!   accepted only when they are all the same (RFC 9110 §8.6), anything else is an error
//!   (§6.3 item 5: the user agent "MUST close the connection ... and discard the received
//!   response").
//! - Chunk-size lines, the CRLF after chunk data and trailer lines must end in CRLF (§7.1: a
//!   bare LF is refused); chunk sizes are hex digits only (no sign, no `0x`, no spaces before).
//! - `101 Switching Protocols` is not an interim response (the module never asks for an
//!   upgrade, RFC 9110 §15.2.2): an error; other 1xx are skipped.
//! - The head is bounded: at most [`MAX_FIELDS`] field lines of at most [`MAX_LINE`] bytes,
//!   [`MAX_HEAD`] bytes in all (interim responses included); the trailer section likewise.
//!
//! Every framing error fails the exchange: the response is discarded and its connection closed
//! (it is never pooled). The reader counts the bytes of the response it received, which the
//! exchange uses to tell "nothing arrived" (a reused connection that was closed: the request
//! may be sent again) from a partial answer.

use std::io::{self, BufRead, Read};

use super::wire::{Failure, Response};

/// The largest response head (status line and fields, interim responses included).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most field lines of one head, and of one trailer section.
pub(crate) const MAX_FIELDS: usize = 64;
/// The longest line of a head or trailer section.
pub(crate) const MAX_LINE: usize = 8 * 1024;
/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// A response that could not be read: the bytes of it received, and why.
#[derive(Debug)]
pub(crate) struct ReadFailure {
    /// Bytes of the response received before the failure.
    pub(crate) seen: usize,
    pub(crate) error: io::Error,
}

fn invalid(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

/// How the body of a response is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// 204, 304: no body whatever the fields say.
    Empty,
    Length(u64),
    Chunked,
    /// Neither field: the body ends with the connection.
    ToEnd,
}

/// Reads a response: head, then the body framed by Content-Length, chunked encoding or the
/// end of the connection. Returns it and whether the connection may be kept. A head that
/// cannot be read, or whose framing is invalid, is a [`ReadFailure`]; a body that fails after a
/// valid head comes back in [`Response::body_error`] (the status stands).
pub(crate) fn read_response<R: BufRead>(
    io: &mut R,
    max_body: usize,
) -> Result<(Response, bool), ReadFailure> {
    let mut seen = 0usize;
    let mut head = Vec::with_capacity(512);
    // Status line and fields; 1xx interim responses (but 101) are skipped.
    let (status, keep, body) = loop {
        head.clear();
        read_head(io, &mut head, &mut seen)?;
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut parsed = httparse::Response::new(&mut fields);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => return Err(bad(seen, "malformed response head")),
            Err(e) => return Err(bad(seen, format!("malformed response head ({e})"))),
        }
        let (Some(version), Some(status)) = (parsed.version, parsed.code) else {
            return Err(bad(seen, "malformed status line"));
        };
        if !(100..600).contains(&status) {
            return Err(bad(seen, format!("status code {status} out of range")));
        }
        if status == 101 {
            return Err(bad(
                seen,
                "101 Switching Protocols (no upgrade was asked for)",
            ));
        }
        if (100..200).contains(&status) {
            continue;
        }
        match framing(version, status, parsed.headers) {
            Ok((keep, body)) => break (status, keep, body),
            Err(m) => return Err(bad(seen, m)),
        }
    };
    let mut resp = Response {
        status,
        body: Vec::new(),
        truncated: false,
        body_error: None,
    };
    let result = match body {
        Body::Empty => Ok(()),
        Body::Chunked => read_chunked(io, &mut resp, max_body),
        Body::Length(n) => read_exact_len(io, &mut resp, n, max_body),
        Body::ToEnd => read_to_end(io, &mut resp, max_body),
    };
    let keep = keep && body != Body::ToEnd && result.is_ok();
    if let Err(e) = result {
        resp.body_error = Some(if super::wire::is_timeout(&e) {
            Failure::Timeout(format!("reading the response: {e}"))
        } else if e.kind() == io::ErrorKind::InvalidData {
            Failure::Transport(format!("malformed HTTP response: {e}"))
        } else {
            Failure::Transport(format!("reading the response: {e}"))
        });
    }
    Ok((resp, keep))
}

fn bad(seen: usize, m: impl Into<String>) -> ReadFailure {
    ReadFailure {
        seen,
        error: invalid(m),
    }
}

/// Reads the lines of one head into `head`, up to and with the empty line, within the bounds.
fn read_head<R: BufRead>(
    io: &mut R,
    head: &mut Vec<u8>,
    seen: &mut usize,
) -> Result<(), ReadFailure> {
    for lines in 0.. {
        let start = head.len();
        let n = read_line(io, head, MAX_LINE).map_err(|error| ReadFailure {
            seen: *seen + head.len() - start,
            error,
        })?;
        *seen += n;
        if *seen > MAX_HEAD {
            return Err(bad(
                *seen,
                format!("response head longer than {MAX_HEAD} bytes"),
            ));
        }
        let line = &head[start..];
        if line == b"\r\n" || line == b"\n" {
            if lines == 0 {
                return Err(bad(*seen, "empty line where a status line was expected"));
            }
            return Ok(());
        }
        // The status line and at most MAX_FIELDS field lines.
        if lines > MAX_FIELDS {
            return Err(bad(*seen, format!("more than {MAX_FIELDS} header fields")));
        }
    }
    unreachable!("the loop returns")
}

/// The framing a final response's fields give (RFC 9112 §6.3), and whether the connection
/// may serve another request. An error for every field combination the module refuses.
fn framing(
    version: u8,
    status: u16,
    fields: &[httparse::Header<'_>],
) -> Result<(bool, Body), String> {
    let mut close = false;
    let mut te = false;
    let mut codings_ok = true;
    let mut codings = 0usize;
    let mut length: Option<u64> = None;
    for f in fields {
        let name = f.name;
        if name.eq_ignore_ascii_case("connection") {
            close |= list(f.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            for coding in list(f.value) {
                codings += 1;
                codings_ok &= coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let mut any = false;
            for v in list(f.value) {
                any = true;
                let n = content_length(v).ok_or("invalid Content-Length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length values".into());
                }
                length = Some(n);
            }
            if !any {
                return Err("empty Content-Length".into());
            }
        }
    }
    if te {
        if length.is_some() {
            return Err("both Transfer-Encoding and Content-Length".into());
        }
        if version == 0 {
            return Err("Transfer-Encoding in an HTTP/1.0 response".into());
        }
        if !codings_ok || codings != 1 {
            return Err("a Transfer-Encoding other than chunked alone".into());
        }
    }
    let keep = version == 1 && !close;
    let body = if status == 204 || status == 304 {
        Body::Empty
    } else if te {
        Body::Chunked
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::ToEnd
    };
    Ok((keep, body))
}

/// The elements of a comma-separated field value, optional whitespace trimmed, empty elements
/// skipped (RFC 9110 §5.6.1).
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// `1*DIGIT` (RFC 9110 §8.6), no sign, no overflow.
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The size of a chunk-size line without its CRLF: `1*HEXDIG [ BWS ";" chunk-ext ]`
/// (RFC 9112 §7.1). No sign, prefix or leading whitespace; extensions are visible ASCII,
/// spaces and tabs, and ignored.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(invalid("malformed HTTP response: bad chunk size"));
    }
    let size = line[..digits].iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(d))
    });
    let size = size.ok_or_else(|| invalid("malformed HTTP response: chunk size too large"))?;
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    let ext_ok = rest.is_empty()
        || (ext.first() == Some(&b';')
            && ext
                .iter()
                .all(|&b| b == b'\t' || b == b' ' || (0x21..0x7f).contains(&b)));
    if !ext_ok {
        return Err(invalid("malformed HTTP response: bad chunk size"));
    }
    Ok(size)
}

/// Reads one line (up to and with `\n`) of at most `max` bytes, appending it to `line`; an end
/// of stream before any byte is an `UnexpectedEof` with nothing read, within a line too.
fn read_line<R: BufRead>(io: &mut R, line: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let n = io.by_ref().take(max as u64 + 1).read_until(b'\n', line)?;
    // One byte more than `max` is read to tell a line that is too long, ended or not.
    if n > max {
        return Err(invalid(format!("response line longer than {max} bytes")));
    }
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            if n == 0 {
                "connection closed by the server"
            } else {
                "connection closed in the middle of a line"
            },
        ));
    }
    Ok(n)
}

/// Reads a line that must end in CRLF (chunked coding); returns it without the CRLF.
fn read_crlf_line<'l, R: BufRead>(
    io: &mut R,
    line: &'l mut Vec<u8>,
    max: usize,
    what: &str,
) -> io::Result<&'l [u8]> {
    line.clear();
    read_line(io, line, max)?;
    line.strip_suffix(b"\r\n")
        .ok_or_else(|| invalid(format!("{what} not ended by CRLF")))
}

fn read_exact_len<R: BufRead>(
    io: &mut R,
    resp: &mut Response,
    n: u64,
    max: usize,
) -> io::Result<()> {
    let want = n.min(max as u64 + 1) as usize;
    resp.body.reserve_exact(want);
    io.by_ref().take(want as u64).read_to_end(&mut resp.body)?;
    if resp.body.len() > max {
        resp.body.truncate(max);
        resp.truncated = true;
        return Ok(());
    }
    if (resp.body.len() as u64) < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the connection closed after {} of {n} body bytes",
                resp.body.len()
            ),
        ));
    }
    Ok(())
}

fn read_to_end<R: BufRead>(io: &mut R, resp: &mut Response, max: usize) -> io::Result<()> {
    io.by_ref()
        .take(max as u64 + 1)
        .read_to_end(&mut resp.body)?;
    if resp.body.len() > max {
        resp.body.truncate(max);
        resp.truncated = true;
    }
    Ok(())
}

fn read_chunked<R: BufRead>(io: &mut R, resp: &mut Response, max: usize) -> io::Result<()> {
    let mut line = Vec::with_capacity(32);
    loop {
        let size = chunk_size(read_crlf_line(
            io,
            &mut line,
            MAX_CHUNK_LINE,
            "chunk-size line",
        )?)?;
        if size == 0 {
            return read_trailers(io, &mut line);
        }
        let room = (max + 1).saturating_sub(resp.body.len()) as u64;
        let take = size.min(room);
        let before = resp.body.len();
        io.by_ref().take(take).read_to_end(&mut resp.body)?;
        if ((resp.body.len() - before) as u64) < take {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed in the middle of a chunk",
            ));
        }
        if resp.body.len() > max {
            resp.body.truncate(max);
            resp.truncated = true;
            return Ok(());
        }
        let mut crlf = [0u8; 2];
        io.read_exact(&mut crlf)?;
        if crlf != *b"\r\n" {
            return Err(invalid("chunk data not followed by CRLF"));
        }
    }
}

/// The trailer section after the last chunk: field lines ending in CRLF, at most
/// [`MAX_FIELDS`] of at most [`MAX_LINE`] bytes and [`MAX_HEAD`] in all, well-formed fields,
/// up to the empty line. Their values are not used.
fn read_trailers<R: BufRead>(io: &mut R, block: &mut Vec<u8>) -> io::Result<()> {
    block.clear();
    for lines in 0.. {
        let start = block.len();
        read_line(io, block, MAX_LINE)?;
        if block.len() > MAX_HEAD {
            return Err(invalid(format!(
                "trailer section longer than {MAX_HEAD} bytes"
            )));
        }
        if !block.ends_with(b"\r\n") {
            return Err(invalid("trailer line not ended by CRLF"));
        }
        if block.len() - start == 2 {
            break;
        }
        if lines >= MAX_FIELDS {
            return Err(invalid(format!("more than {MAX_FIELDS} trailer fields")));
        }
    }
    if block.len() == 2 {
        return Ok(());
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    match httparse::parse_headers(block, &mut fields) {
        Ok(httparse::Status::Complete((n, _))) if n == block.len() => Ok(()),
        _ => Err(invalid("malformed trailer field")),
    }
}

/// One response read by [`parse_responses`]: `Ok((status, body, truncated, body_error, keep))`
/// (`keep`: the connection could serve another request), or `Err((bytes seen, message))`.
#[cfg(any(fuzzing, test))]
pub(crate) type Parsed =
    std::result::Result<(u16, Vec<u8>, bool, Option<String>, bool), (usize, String)>;

/// Reads responses from `bytes` as from a kept-alive connection: one after the other while the
/// previous allows keeping the connection and bytes are left. Each with the number of bytes it
/// used.
#[cfg(any(fuzzing, test))]
pub(crate) fn parse_responses(bytes: &[u8], max_body: usize) -> Vec<(Parsed, usize)> {
    let mut io = io::BufReader::with_capacity(64, bytes);
    let mut out = Vec::new();
    let mut used = 0;
    loop {
        let before = bytes.len() - io.get_ref().len() - io.buffer().len();
        let parsed = match read_response(&mut io, max_body) {
            Ok((r, keep)) => Ok((
                r.status,
                r.body,
                r.truncated,
                r.body_error.map(|f| format!("{f:?}")),
                keep,
            )),
            Err(f) => Err((f.seen, f.error.to_string())),
        };
        let after = bytes.len() - io.get_ref().len() - io.buffer().len();
        used += after - before;
        // A response read whole used at least its status line, so the loop moves on (and it
        // stops at 64 responses whatever happens).
        let go_on = matches!(&parsed, Ok((_, _, false, None, true)));
        out.push((parsed, after - before));
        if !go_on || after == bytes.len() || out.len() >= 64 {
            debug_assert!(used <= bytes.len());
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_back_to_back_use_exactly_their_bytes() {
        let a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        let b = b"HTTP/1.1 404 X\r\nContent-Length: 3\r\n\r\nabc";
        let bytes = [&a[..], &b[..]].concat();
        let out = parse_responses(&bytes, 1024);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            (Ok((200, b"{}".to_vec(), false, None, true)), a.len())
        );
        assert_eq!(
            out[1],
            (Ok((404, b"abc".to_vec(), false, None, true)), b.len())
        );
    }

    #[test]
    fn a_body_of_max_body_bytes_is_whole_and_one_more_is_truncated() {
        let max = 16;
        let body = |n: usize| vec![b'b'; n];
        for n in [max - 1, max, max + 1] {
            let truncated = n > max;
            let to_end = [
                &b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"[..],
                &body(n),
            ]
            .concat();
            let length = [
                format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
                &body(n),
            ]
            .concat();
            let chunked = [
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n")
                    .as_bytes(),
                &body(n),
                b"\r\n0\r\n\r\n",
            ]
            .concat();
            for (name, bytes, keep) in [
                ("to the end", to_end, false),
                ("Content-Length", length, true),
                ("chunked", chunked, true),
            ] {
                let out = parse_responses(&bytes, max);
                assert_eq!(
                    out[0].0,
                    Ok((200, body(n.min(max)), truncated, None, keep)),
                    "{name}, {n} bytes"
                );
            }
        }
    }

    /// A body that ends before its Content-Length is an error naming how much came, not a
    /// short body.
    #[test]
    fn a_body_shorter_than_its_content_length_is_an_error() {
        let out = parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"sig", 1024);
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0].0, Ok((200, _, false, Some(e), false)) if e.contains("closed after 5 of 40 body bytes")),
            "{out:?}"
        );
    }

    /// A chunk cut short by the connection's end, also after earlier chunks, is named as such.
    #[test]
    fn a_chunk_cut_short_is_an_error() {
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n5\r\nab";
        let out = parse_responses(bytes, 1024);
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0].0, Ok((200, _, false, Some(e), false)) if e.contains("closed in the middle of a chunk")),
            "{out:?}"
        );
    }

    #[test]
    fn chunk_sizes_and_lengths() {
        assert_eq!(chunk_size(b"1aF").unwrap(), 0x1af);
        assert_eq!(chunk_size(b"2 ;x=\"y\"").unwrap(), 2);
        assert_eq!(chunk_size(b"ffffffffffffffff").unwrap(), u64::MAX);
        for bad in [
            &b""[..],
            b"+2",
            b" 2",
            b"0x2",
            b"2 x",
            b"2;\x01",
            b"10000000000000000",
        ] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(content_length(b"007"), Some(7));
        assert_eq!(content_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b"5 5",
            b"0x5",
            b"18446744073709551616",
        ] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }
}
