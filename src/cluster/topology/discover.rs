//! Discovery: asking the seed nodes for the slot map.
//!
//! Each seed is asked in turn until one gives a map that covers every slot; the causes of the
//! seeds that gave none are kept, because when no seed answers keyward cannot start in cluster
//! mode, and the operator needs to know, seed by seed, whether that was a refused connection, a
//! refused password, a node that is not in cluster mode, or a cluster still being created.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::types::OwnedFrame as Resp2Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::error::{SeedFailure, TopologyError};
use super::parse::Transport;
use super::slot_map::SlotMap;
use crate::protocol::write;
use crate::upstream::{DialError, DialFailure, UpstreamTarget};

/// The largest topology reply [`discover`] accepts. `CLUSTER SHARDS` for a cluster of a thousand
/// nodes is well under a megabyte; anything near this limit is not a topology reply.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Reads the slot map from the first seed that can give one.
///
/// Each seed (`host:port`) is tried in turn on a fresh connection, dialled as `template` says
/// (its address replaced by the seed's; TLS and `AUTH` when it has them; always RESP2, which is
/// what the parsers read): then `CLUSTER SHARDS`, and `CLUSTER SLOTS` if that is answered with
/// an error (servers older than 7.0). The connect, the TLS handshake, `AUTH` and each reply are
/// bounded by the template's `connect_timeout` separately.
///
/// A map that covers all 16384 slots is returned at once. A partial map (a cluster that lost a
/// shard, or a node with a stale view) is kept while the remaining seeds are tried, and the most
/// complete one is returned if no seed has a complete map. When no seed gives any map, the error
/// lists every seed with its cause.
pub async fn discover(
    seeds: &[String],
    template: &UpstreamTarget,
) -> Result<SlotMap, TopologyError> {
    if seeds.is_empty() {
        return Err(TopologyError::NoSeeds);
    }
    let mut best: Option<SlotMap> = None;
    let mut failures = Vec::new();
    for seed in seeds {
        let target = UpstreamTarget {
            addr: seed.clone(),
            resp3: false,
            ..template.clone()
        };
        match query_seed(&target).await {
            Ok(map) if map.is_complete() => return Ok(map),
            Ok(map) if map.assigned_slots() == 0 => {
                failures.push((seed.clone(), SeedFailure::NoSlots))
            }
            Ok(map) => {
                tracing::debug!(
                    seed = %seed,
                    assigned = map.assigned_slots(),
                    "cluster seed gave a partial slot map"
                );
                if best
                    .as_ref()
                    .is_none_or(|b| map.assigned_slots() > b.assigned_slots())
                {
                    best = Some(map);
                }
            }
            Err(cause) => {
                tracing::debug!(seed = %seed, %cause, "cluster seed gave no slot map");
                failures.push((seed.clone(), cause));
            }
        }
    }
    best.ok_or(TopologyError::AllSeedsFailed(failures))
}

/// One seed: connect and authenticate (the dialer), ask for the topology, parse it.
async fn query_seed(target: &UpstreamTarget) -> Result<SlotMap, SeedFailure> {
    let (seed, io_timeout) = (target.addr.as_str(), target.connect_timeout);
    let transport = match target.tls {
        None => Transport::Tcp,
        Some(_) => Transport::Tls,
    };
    let mut stream = target.dial().await.map_err(seed_failure_of_dial)?;
    // Not shown to MONITOR clients of keyward.
    let _own = crate::cluster::housekeeping::register(stream.local_addr());
    let mut buf = BytesMut::with_capacity(16 * 1024);

    let shards = write::command(b"CLUSTER", &[b"SHARDS"]);
    let shards_error = match request(
        &mut stream,
        &mut buf,
        &shards,
        io_timeout,
        "the CLUSTER SHARDS reply",
    )
    .await?
    {
        Resp2Frame::Error(e) => e,
        frame => {
            return SlotMap::from_cluster_shards_on(&frame, seed, transport)
                .map_err(to_seed_failure);
        }
    };
    if is_auth_error(&shards_error) {
        return Err(SeedFailure::Auth(shards_error));
    }

    let slots = write::command(b"CLUSTER", &[b"SLOTS"]);
    match request(
        &mut stream,
        &mut buf,
        &slots,
        io_timeout,
        "the CLUSTER SLOTS reply",
    )
    .await?
    {
        Resp2Frame::Error(slots_error) => Err(SeedFailure::Refused(format!(
            "CLUSTER SHARDS: {shards_error}; CLUSTER SLOTS: {slots_error}"
        ))),
        frame => SlotMap::from_cluster_slots(&frame, seed).map_err(to_seed_failure),
    }
}

/// A failed dial in discovery's words: a TLS failure (a refused certificate included) is
/// "cannot connect", as a refused TCP connection is, and a refused `AUTH` is "authentication
/// refused", as a `NOAUTH` to `CLUSTER SHARDS` is.
fn seed_failure_of_dial(e: DialError) -> SeedFailure {
    match e.failure {
        DialFailure::Connect(e) | DialFailure::Tls(e) => SeedFailure::Connect(e),
        DialFailure::ConnectTimeout => SeedFailure::Timeout("the TCP connection"),
        DialFailure::TlsTimeout => SeedFailure::Timeout("the TLS handshake"),
        DialFailure::Refused(text) => SeedFailure::Auth(text),
        DialFailure::HandshakeIo(e) => SeedFailure::Io(e),
        DialFailure::HandshakeProtocol(e) => SeedFailure::Protocol(e),
        DialFailure::HandshakeTimeout => SeedFailure::Timeout("the AUTH reply"),
        // Seeds are dialled at their own addresses, never through a sentinel's primary.
        DialFailure::NoPrimary(sentence) => SeedFailure::Refused(sentence),
    }
}

fn to_seed_failure(e: TopologyError) -> SeedFailure {
    SeedFailure::Malformed(e.to_string())
}

/// `NOAUTH` (no credentials given) and `NOPERM` (the ACL user may not run the command) mean the
/// other command would fail the same way: say so instead of trying it.
fn is_auth_error(e: &str) -> bool {
    e.starts_with("NOAUTH") || e.starts_with("NOPERM") || e.starts_with("WRONGPASS")
}

/// Sends one command and reads one RESP2 reply, within `io_timeout`.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    cmd: &[u8],
    io_timeout: Duration,
    waiting_for: &'static str,
) -> Result<Resp2Frame, SeedFailure> {
    let exchange = async {
        stream.write_all(cmd).await.map_err(SeedFailure::Io)?;
        read_reply(stream, buf).await
    };
    match timeout(io_timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(SeedFailure::Timeout(waiting_for)),
    }
}

/// Reads until `buf` holds one whole RESP2 frame, and removes it from `buf`. The decoder is fed
/// only replies from a cluster node, never client bytes (see ARCHITECTURE.md on its recursion).
async fn read_reply<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Resp2Frame, SeedFailure> {
    loop {
        if !buf.is_empty() {
            match redis_protocol::resp2::decode::decode(buf) {
                Ok(Some((frame, len))) => {
                    let _ = buf.split_to(len);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(SeedFailure::Protocol(e.to_string())),
            }
        }
        if buf.len() >= MAX_REPLY_BYTES {
            return Err(SeedFailure::Protocol(format!(
                "reply larger than {MAX_REPLY_BYTES} bytes"
            )));
        }
        buf.reserve(16 * 1024);
        match stream.read_buf(buf).await {
            Ok(0) => {
                return Err(SeedFailure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the node closed the connection",
                )));
            }
            Ok(_) => {}
            Err(e) => return Err(SeedFailure::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- discover() against scripted fake nodes --------------------------------------------

    /// A fake node: answers each command (matched by its arguments joined with spaces,
    /// upper-cased) from `script`; unknown commands get `-ERR unknown`. Returns its address.
    async fn fake_node(script: Vec<(&'static str, &'static str)>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                tokio::spawn(async move {
                    let mut buf = BytesMut::new();
                    loop {
                        let frame = match read_reply(&mut sock, &mut buf).await {
                            Ok(frame) => frame,
                            Err(_) => return,
                        };
                        let Resp2Frame::Array(args) = frame else {
                            return;
                        };
                        let line = args
                            .iter()
                            .map(|a| match a {
                                Resp2Frame::BulkString(b) => {
                                    String::from_utf8_lossy(b).into_owned()
                                }
                                _ => String::new(),
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                            .to_uppercase();
                        let reply = script
                            .iter()
                            .find(|(cmd, _)| *cmd == line)
                            .map(|(_, reply)| *reply)
                            .unwrap_or("-ERR unknown\r\n");
                        if reply == "HANG" {
                            std::future::pending::<()>().await;
                        }
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// How the tests dial a seed: plain TCP, a 2 s timeout, and `(username, password)` if given.
    fn template(auth: Option<(Option<&str>, &str)>) -> UpstreamTarget {
        UpstreamTarget {
            addr: String::new(),
            primary: None,
            username: auth.and_then(|(user, _)| user.map(String::from)),
            password: auth.map(|(_, password)| password.to_string()),
            connect_timeout: Duration::from_secs(2),
            reply_timeout: Duration::ZERO,
            resp3: false,
            tls: None,
        }
    }

    /// CLUSTER SLOTS for one primary on port 7001 with an unknown (null) endpoint.
    const SLOTS_ONE_NODE: &str = "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$-1\r\n:7001\r\n$2\r\nid\r\n";

    /// A port with nothing listening (bound, then released).
    fn dead_seed() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn discover_falls_back_to_cluster_slots() {
        let seed = fake_node(vec![
            ("CLUSTER SHARDS", "-ERR unknown subcommand 'SHARDS'\r\n"),
            ("CLUSTER SLOTS", SLOTS_ONE_NODE),
        ])
        .await;
        let map = discover(&[dead_seed(), seed], &template(None))
            .await
            .unwrap();
        assert!(map.is_complete());
        // The null endpoint became the seed's host.
        assert_eq!(map.owner(123).unwrap(), "127.0.0.1:7001");
    }

    #[tokio::test]
    async fn discover_authenticates_first() {
        let seed = fake_node(vec![
            ("AUTH KW SECRET", "+OK\r\n"),
            (
                "CLUSTER SHARDS",
                "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*8\r\n\
                 $4\r\nport\r\n:7009\r\n$8\r\nendpoint\r\n$9\r\nlocalhost\r\n\
                 $4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n",
            ),
        ])
        .await;
        let auth = Some((Some("kw"), "secret"));
        let map = discover(std::slice::from_ref(&seed), &template(auth))
            .await
            .unwrap();
        assert_eq!(map.owner(0).unwrap(), "localhost:7009");

        // Wrong password: the AUTH error is reported with the seed.
        let auth = Some((None, "wrong"));
        let err = discover(std::slice::from_ref(&seed), &template(auth))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&seed) && err.contains("authentication refused: ERR unknown"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn discover_names_every_seed_and_cause() {
        let dead = dead_seed();
        let not_cluster = fake_node(vec![
            (
                "CLUSTER SHARDS",
                "-ERR This instance has cluster support disabled\r\n",
            ),
            (
                "CLUSTER SLOTS",
                "-ERR This instance has cluster support disabled\r\n",
            ),
        ])
        .await;
        let empty = fake_node(vec![("CLUSTER SHARDS", "*0\r\n")]).await;
        let noauth = fake_node(vec![(
            "CLUSTER SHARDS",
            "-NOAUTH Authentication required.\r\n",
        )])
        .await;
        let garbage = fake_node(vec![("CLUSTER SHARDS", "+OK\r\n")]).await;
        let hangs = fake_node(vec![("CLUSTER SHARDS", "HANG")]).await;
        let seeds = vec![
            dead.clone(),
            not_cluster.clone(),
            empty.clone(),
            noauth.clone(),
            garbage.clone(),
            hangs.clone(),
        ];
        let quick = UpstreamTarget {
            connect_timeout: Duration::from_millis(300),
            ..template(None)
        };
        let err = discover(&seeds, &quick).await.unwrap_err();
        let TopologyError::AllSeedsFailed(failures) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(failures.len(), 6);
        let text = err.to_string();
        for (seed, cause) in [
            (&dead, "cannot connect"),
            (
                &not_cluster,
                "CLUSTER SHARDS: ERR This instance has cluster support disabled; CLUSTER SLOTS: ERR This instance",
            ),
            (&empty, "knows no slot"),
            (&noauth, "authentication refused: NOAUTH"),
            (&garbage, "expected an array"),
            (&hangs, "timed out waiting for the CLUSTER SHARDS reply"),
        ] {
            assert!(
                text.contains(&format!("{seed}: ")),
                "{seed} missing in {text}"
            );
            let entry = failures.iter().find(|(s, _)| s == seed).unwrap();
            assert!(
                entry.1.to_string().contains(cause),
                "{seed}: {} lacks {cause}",
                entry.1
            );
        }

        assert!(matches!(
            discover(&[], &template(None)).await,
            Err(TopologyError::NoSeeds)
        ));
    }

    #[tokio::test]
    async fn discover_prefers_a_complete_map() {
        // The first seed knows only half the slots, the second all of them.
        let partial = fake_node(vec![
            ("CLUSTER SHARDS", "-ERR no\r\n"),
            (
                "CLUSTER SLOTS",
                "*1\r\n*3\r\n:0\r\n:8191\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n",
            ),
        ])
        .await;
        let complete = fake_node(vec![
            ("CLUSTER SHARDS", "-ERR no\r\n"),
            ("CLUSTER SLOTS", SLOTS_ONE_NODE),
        ])
        .await;
        let map = discover(&[partial.clone(), complete], &template(None))
            .await
            .unwrap();
        assert!(map.is_complete());
        // Only a partial map anywhere: that one is returned.
        let map = discover(&[dead_seed(), partial], &template(None))
            .await
            .unwrap();
        assert_eq!(map.assigned_slots(), 8192);
    }
}
