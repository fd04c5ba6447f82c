//! Property tests for the client request scanner (and the reply framer): whatever a client
//! sends, the scanner must not panic, and how the bytes are split into reads must not change
//! what it sees.

use bytes::BytesMut;
use keyward::protocol::reply::{FrameError, ReplyFramer};
use keyward::protocol::request::{ProtocolError, Request, RequestScanner, ScanLimits};
use proptest::collection::vec;
use proptest::prelude::*;

type Outcome = (Vec<Request>, Option<ProtocolError>, Vec<u8>);

/// Feeds `input` in pieces whose sizes cycle through `sizes`, draining requests after each
/// piece. Returns the requests, the error that ended the stream (if any), and the leftover.
fn scan(limits: ScanLimits, input: &[u8], sizes: &[usize]) -> Outcome {
    let mut scanner = RequestScanner::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = sizes.iter().copied().cycle();
    while at < input.len() {
        let n = sizes
            .next()
            .unwrap_or(input.len())
            .clamp(1, input.len() - at);
        buf.extend_from_slice(&input[at..at + n]);
        at += n;
        loop {
            match scanner.next(&mut buf) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => break,
                Err(e) => return (out, Some(e), buf.to_vec()),
            }
        }
    }
    (out, None, buf.to_vec())
}

fn frame(input: &[u8], sizes: &[usize]) -> (Vec<usize>, Option<FrameError>) {
    let mut framer = ReplyFramer::new();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = sizes.iter().copied().cycle();
    while at < input.len() {
        let n = sizes
            .next()
            .unwrap_or(input.len())
            .clamp(1, input.len() - at);
        buf.extend_from_slice(&input[at..at + n]);
        at += n;
        loop {
            match framer.next_frame_len(&buf) {
                Ok(Some(len)) => {
                    assert!(len > 0 && len <= buf.len());
                    out.push(len);
                    buf.drain(..len);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Byte soup biased towards protocol tokens, so that the interesting paths (counts, headers,
/// quotes, escapes, NULs, skipped CRLFs) are actually reached. Always far below 64 KiB, where
/// Redis's own "too big" checks would make the outcome depend on the read sizes.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\0".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\\x4".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"0".to_vec()),
        Just(b"PING".to_vec()),
        Just(b"*1\r\n$4\r\nPING\r\n".to_vec()),
        Just(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()),
        Just(b"SET a \"b c\"\r\n".to_vec()),
        (0u8..10).prop_map(|d| vec![b'0' + d]),
        any::<u8>().prop_map(|b| vec![b]),
        vec(any::<u8>(), 0..8),
    ];
    vec(token, 0..200).prop_map(|tokens| tokens.concat())
}

fn reply_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        (0usize..15).prop_map(|i| vec![b"+-:_,#($!=*%~>|"[i]]),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"?".to_vec()),
        Just(b"t".to_vec()),
        (0u8..10).prop_map(|d| vec![b'0' + d]),
        Just(b"*2\r\n$3\r\nfoo\r\n:1\r\n".to_vec()),
        Just(b"|1\r\n+a\r\n+b\r\n".to_vec()),
        Just(b"%1\r\n+k\r\n+v\r\n".to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    vec(token, 0..200).prop_map(|tokens| tokens.concat())
}

proptest! {
    // No failure persistence: a regression file would be written into the source tree.
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn byte_soup_never_panics_and_chunking_is_invisible(
        input in prop_oneof![soup(), vec(any::<u8>(), 0..512)],
        sizes in vec(1usize..40, 1..16),
        small_limits in any::<bool>(),
    ) {
        let limits = if small_limits {
            ScanLimits { max_bulk_len: 8, max_args: 4, ..ScanLimits::default() }
        } else {
            ScanLimits::default()
        };
        let whole = scan(limits, &input, &[input.len()]);
        let chunked = scan(limits, &input, &sizes);
        let one_by_one = scan(limits, &input, &[1]);
        // After an error the connection is closed, so what is left buffered then is moot (it
        // depends on how much had arrived); everything else must be identical.
        let moot = |o: &Outcome| {
            let rest = if o.1.is_some() { Vec::new() } else { o.2.clone() };
            (o.0.clone(), o.1.clone(), rest)
        };
        prop_assert_eq!(moot(&chunked), moot(&whole));
        prop_assert_eq!(moot(&one_by_one), moot(&whole));
        for r in &whole.0 {
            prop_assert!(!r.args().is_empty());
            if !r.inline {
                // RESP requests are forwarded byte for byte; re-scanning `raw` gives the same.
                let again = scan(limits, r.raw(), &[r.raw().len()]);
                prop_assert_eq!(again.0.len(), 1);
                prop_assert_eq!(&again.0[0], r);
            } else {
                // Inline requests are re-encoded as a canonical RESP array of the parsed args.
                let args: Vec<Vec<u8>> = r.args().iter().map(|a| a.to_vec()).collect();
                prop_assert_eq!(&r.raw()[..], &encode(&args)[..]);
            }
        }
    }

    #[test]
    fn resp_arrays_round_trip(
        args in vec(vec(any::<u8>(), 0..100), 1..20),
        sizes in vec(1usize..50, 1..8),
    ) {
        let input = encode(&args);
        let (reqs, err, rest) = scan(ScanLimits::default(), &input, &sizes);
        prop_assert_eq!(err, None);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        prop_assert!(!r.inline);
        prop_assert_eq!(&r.raw()[..], &input[..]);
        let got: Vec<Vec<u8>> = r.args().iter().map(|a| a.to_vec()).collect();
        prop_assert_eq!(got, args);
    }

    #[test]
    fn reply_soup_never_panics_and_chunking_is_invisible(
        input in prop_oneof![reply_soup(), vec(any::<u8>(), 0..512)],
        sizes in vec(1usize..40, 1..16),
    ) {
        let whole = frame(&input, &[input.len()]);
        prop_assert_eq!(&frame(&input, &sizes), &whole);
        prop_assert_eq!(&frame(&input, &[1]), &whole);
    }
}

#[test]
fn deeply_nested_arrays_are_rejected_without_recursion() {
    let input = b"*1\r\n".repeat(100_000);
    for sizes in [&[input.len()][..], &[4096], &[3]] {
        let (reqs, err, _) = scan(ScanLimits::default(), &input, sizes);
        assert!(reqs.is_empty());
        assert_eq!(
            err.map(|e| e.message()).as_deref(),
            Some("ERR Protocol error: expected '$', got '*'")
        );
    }
}
