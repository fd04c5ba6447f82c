//! Frames keyward builds itself: its own error replies, the replies a cluster fan-out puts
//! together from the nodes' replies, and the commands it sends upstream on its own (`AUTH` on
//! connect, the per-slot parts of a cluster fan-out). A rewritten
//! `REMOVEKEYS` keeps the client's bytes and is built in `request.rs`. Replies are encoded by
//! `redis-protocol`, which is safe here because keyward, not a client, chooses the input;
//! commands are written here (see [`command_in`]).

use bytes::{BufMut, Bytes, BytesMut};
use redis_protocol::resp2::encode::extend_encode_borrowed;
use redis_protocol::resp2::types::BorrowedFrame;

/// An error reply line. `message` is the text after the `-`, e.g. `ERR something failed`;
/// CR and LF are replaced by spaces because they would end the line early and desynchronise
/// the client.
pub fn error(message: &str) -> Bytes {
    let clean: String = message
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let mut buf = BytesMut::with_capacity(clean.len() + 3);
    // Encoding into a growable buffer cannot fail.
    let _ = extend_encode_borrowed(&mut buf, &BorrowedFrame::Error(&clean), false);
    buf.freeze()
}

/// A simple-string reply such as `+OK`.
pub fn simple(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 3);
    let _ = extend_encode_borrowed(
        &mut buf,
        &BorrowedFrame::SimpleString(text.as_bytes()),
        false,
    );
    buf.freeze()
}

/// A bulk-string reply.
pub fn bulk(data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 16);
    let _ = extend_encode_borrowed(&mut buf, &BorrowedFrame::BulkString(data), false);
    buf.freeze()
}

/// An integer reply `:n`. (Named `int` so that it does not clash with [`reply::integer`], which
/// reads one.)
///
/// [`reply::integer`]: super::reply::integer
pub fn int(n: i64) -> Bytes {
    Bytes::from(format!(":{n}\r\n"))
}

/// An array reply of `elements`, each already a complete frame (for instance the elements of
/// several nodes' replies, put back together).
pub fn array(elements: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + elements.iter().map(Bytes::len).sum::<usize>());
    out.put_slice(format!("*{}\r\n", elements.len()).as_bytes());
    for e in elements {
        out.put_slice(e);
    }
    out.freeze()
}

/// A command as a RESP array of bulk strings: `name` followed by `args`.
pub fn command<A: AsRef<[u8]>>(name: &[u8], args: &[A]) -> Bytes {
    command_in(&mut BytesMut::new(), name, args)
}

/// Like [`command`], encoded at the end of `buf` and split off from it: the commands of a
/// fan-out, built one after the other, share one allocation instead of one each.
///
/// Written out here rather than through `redis-protocol`'s encoder, which sizes every length
/// with a floating-point `log10` and goes through parser-combinator writers: for a 1000-key
/// delete that was about 200 instructions per key, a tenth of what keyward spent on an HTTP
/// `POST /v1/keys/remove` (callgrind); this loop is a few dozen.
pub fn command_in<A: AsRef<[u8]>>(buf: &mut BytesMut, name: &[u8], args: &[A]) -> Bytes {
    let payload: usize = name.len() + args.iter().map(|a| a.as_ref().len()).sum::<usize>();
    buf.reserve(payload + 16 * (args.len() + 2));
    put_header(buf, b'*', args.len() + 1);
    put_bulk(buf, name);
    for arg in args {
        put_bulk(buf, arg.as_ref());
    }
    buf.split().freeze()
}

fn put_bulk(buf: &mut BytesMut, data: &[u8]) {
    put_header(buf, b'$', data.len());
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

/// `kind`, `n` in decimal, CRLF.
fn put_header(buf: &mut BytesMut, kind: u8, n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_u8(kind);
    buf.put_slice(&digits[at..]);
    buf.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line() {
        assert_eq!(&error("ERR bad\r\nthing")[..], b"-ERR bad  thing\r\n");
    }

    #[test]
    fn integers_and_arrays() {
        assert_eq!(&int(-3)[..], b":-3\r\n");
        assert_eq!(
            &array(&[int(1), bulk(b"a")])[..],
            b"*2\r\n:1\r\n$1\r\na\r\n"
        );
        assert_eq!(&array(&[])[..], b"*0\r\n");
    }

    #[test]
    fn simple_strings() {
        assert_eq!(&simple("OK")[..], b"+OK\r\n");
    }

    #[test]
    fn commands_are_encoded_as_redis_protocol_encodes_them() {
        let long = vec![b'x'; 12345];
        let args: Vec<&[u8]> = vec![b"", b"a", &long, b"\r\n", b"0123456789"];
        let mut expected = BytesMut::new();
        let mut parts = vec![BorrowedFrame::BulkString(b"SET")];
        parts.extend(args.iter().map(|a| BorrowedFrame::BulkString(a)));
        let _ = extend_encode_borrowed(&mut expected, &BorrowedFrame::Array(&parts), false);
        assert_eq!(command(b"SET", &args), expected.freeze());
        let mut shared = BytesMut::new();
        let first = command_in(&mut shared, b"GET", &[b"k"]);
        let second = command_in(&mut shared, b"DEL", &[b"a", b"b"]);
        assert_eq!(&first[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(&second[..], b"*3\r\n$3\r\nDEL\r\n$1\r\na\r\n$1\r\nb\r\n");
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            &command(b"UNLINK", &[&b"a"[..], b"\r\n"])[..],
            b"*3\r\n$6\r\nUNLINK\r\n$1\r\na\r\n$2\r\n\r\n\r\n"
        );
    }
}
