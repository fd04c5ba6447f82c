//! Socket I/O that client sessions and upstream connections share: reading with a buffer that
//! grows with the traffic, writing many chunks in one system call, and giving back the memory
//! a big frame made a buffer grow.

use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use super::Socket;

/// Reads what `stream` has into `buf` without waiting; `Ok(0)` is the end of the stream.
///
/// A read that fills less than the space offered has drained the socket, and tokio is told so
/// at once (a `WouldBlock` returned from inside `try_io` clears its readiness flag), instead of
/// finding out with a second read that fails: one system call per request saved on a client
/// that sends one request at a time. tokio only clears the flag if no new readiness event came
/// in meanwhile, so nothing that arrives later is missed.
pub(crate) fn read_some(stream: &Socket, buf: &mut BytesMut) -> std::io::Result<usize> {
    let offered = buf.capacity() - buf.len();
    let mut read = None;
    let result = stream.try_io(tokio::io::Interest::READABLE, || {
        let n = stream.try_read_buf(buf)?;
        read = Some(n);
        if n > 0 && n < offered {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match (result, read) {
        (_, Some(n)) => Ok(n),
        (Err(e), None) => Err(e),
        (Ok(n), None) => Ok(n),
    }
}

/// The room a connection's read buffer is given before a read: small at first, because most
/// requests and replies are small and, with thousands of mostly idle clients, read buffers are
/// most of what a client costs keyward (measured: starting at 2 KiB instead of 16 KiB saves
/// about 4 KiB of resident memory per client that has sent a request); doubled whenever a read
/// fills all the room it was given, up to 16 KiB, so that a pipelining client soon reads as
/// much per system call as it would with a big buffer from the start.
pub(crate) struct ReadChunk(usize);

impl ReadChunk {
    const FIRST: usize = 2 * 1024;
    const MAX: usize = 16 * 1024;

    pub(crate) fn new() -> Self {
        ReadChunk(Self::FIRST)
    }

    /// Reads like [`read_some`], first making room in `buf` when little is left.
    pub(crate) fn read(&mut self, stream: &Socket, buf: &mut BytesMut) -> std::io::Result<usize> {
        if buf.capacity() - buf.len() < self.0 / 4 {
            buf.reserve(self.0);
        }
        let offered = buf.capacity() - buf.len();
        let result = read_some(stream, buf);
        if matches!(result, Ok(n) if n == offered) && self.0 < Self::MAX {
            self.0 *= 2;
        }
        result
    }
}

/// A read buffer whose capacity grew past this (a big request or reply) is shrunk again once
/// little of it is in use; see [`release_grown_buffer`].
pub(crate) const KEEP_BUFFER: usize = 256 * 1024;

/// Gives back the memory of a read buffer that a big request or reply made grow, once that
/// request or reply has been split off and only a little (the start of the next one, usually
/// nothing) is left in it.
///
/// The part split off is freed when its user drops it, but what remains of the buffer still
/// points into the same allocation, keeps it alive, and later reuses it: without this, one
/// 100 MB reply on a long-lived connection (a shared upstream connection lives as long as
/// keyward) pins about 128 MB for good. The leftover bytes are copied as they are, so a framer's
/// or scanner's position in the buffer stays valid. A buffer still filling with a big frame
/// holds more than a quarter of `KEEP_BUFFER` and is left alone.
pub(crate) fn release_grown_buffer(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() > KEEP_BUFFER && buf.len() <= KEEP_BUFFER / 4 {
        let mut fresh = BytesMut::with_capacity(chunk.max(buf.len() * 2));
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

/// Writes every chunk to `stream`, in order, waiting for the socket when it is full.
pub(crate) async fn write_all_chunks(
    stream: &Socket,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    const MAX_SLICES: usize = 64;
    let mut first = 0;
    while first < chunks.len() {
        let written = {
            let slices: Vec<IoSlice<'_>> = chunks[first..]
                .iter()
                .take(MAX_SLICES)
                .map(|c| IoSlice::new(c))
                .collect();
            stream.try_write_vectored(&slices)
        };
        match written {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => first = consume(chunks, first, n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    chunks.clear();
    Ok(())
}

/// Drops `n` written bytes from `chunks[first..]`; returns the index of the first chunk with
/// bytes left.
fn consume(chunks: &mut [Bytes], mut first: usize, mut n: usize) -> usize {
    while n > 0 {
        let chunk = &mut chunks[first];
        if n >= chunk.len() {
            n -= chunk.len();
            first += 1;
        } else {
            chunk.advance(n);
            n = 0;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_grown_by_a_big_frame_is_released_once_the_frame_is_split_off() {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        buf.extend_from_slice(&vec![b'x'; 4 * 1024 * 1024]);
        buf.extend_from_slice(b"+PA");
        let frame = buf.split_to(4 * 1024 * 1024).freeze();
        assert!(
            buf.capacity() > KEEP_BUFFER,
            "the remainder still holds the allocation"
        );
        release_grown_buffer(&mut buf, 16 * 1024);
        assert_eq!(&buf[..], b"+PA", "the leftover bytes are kept as they are");
        assert_eq!(buf.capacity(), 16 * 1024);
        assert_eq!(frame.len(), 4 * 1024 * 1024);
    }

    #[test]
    fn a_buffer_filling_with_a_big_frame_is_left_alone() {
        let mut buf = BytesMut::with_capacity(1024 * 1024);
        buf.extend_from_slice(&vec![b'x'; KEEP_BUFFER / 4 + 1]);
        let capacity = buf.capacity();
        release_grown_buffer(&mut buf, 16 * 1024);
        assert_eq!(buf.capacity(), capacity);
        assert_eq!(buf.len(), KEEP_BUFFER / 4 + 1);

        let mut small = BytesMut::with_capacity(KEEP_BUFFER);
        small.extend_from_slice(b"abc");
        release_grown_buffer(&mut small, 16 * 1024);
        assert_eq!(
            small.capacity(),
            KEEP_BUFFER,
            "not grown past KEEP_BUFFER: kept"
        );
    }
}
