//! Commands that span slots or nodes: split, sent in parallel, and their replies combined.
//!
//! The classes follow the command table's [`Fanout`](crate::commands::Fanout):
//! - split and sum (`DEL`, `UNLINK`, `EXISTS`, `TOUCH`, `REMOVEKEYS`): one command per slot,
//!   integers added;
//! - split and merge (`MGET`): one `MGET` per slot, values put back in the client's key order;
//! - split pairs (`MSET`): one `MSET` per slot; not atomic across slots;
//! - every primary (`DBSIZE` summed, `KEYS` concatenated, `FLUSHALL`/`FLUSHDB` all `OK`, `SCAN`
//!   one node after the other with the node in the cursor).
//!
//! Keys are grouped by hash slot, not only by node: Redis refuses a multi-key command whose keys
//! span slots (CROSSSLOT) even when one node owns them all.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::join_all;

use super::topology::{SLOT_COUNT, slot_of};
use super::{Cluster, Submitted, Target};
use crate::commands::Fanout;
use crate::protocol::args::{Args, OwnedArgs};
use crate::protocol::reply::{self, elements, error_text};
use crate::protocol::write::{self, array};

/// Key indexes grouped by slot, slots in order of first appearance, keys in request order.
pub fn group_by_slot<K: AsRef<[u8]>>(keys: &[K]) -> Vec<(u16, Vec<usize>)> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    if keys.len() <= 8 {
        // A few keys: a linear search beats setting up the slot table.
        for (i, key) in keys.iter().enumerate() {
            let slot = slot_of(key.as_ref());
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        return groups;
    }
    // Slot -> position in `groups` (+1; 0 is "none yet").
    let mut index = vec![0u32; SLOT_COUNT];
    for (i, key) in keys.iter().enumerate() {
        let slot = slot_of(key.as_ref());
        match index[usize::from(slot)] {
            0 => {
                groups.push((slot, vec![i]));
                index[usize::from(slot)] = groups.len() as u32;
            }
            g => groups[g as usize - 1].1.push(i),
        }
    }
    groups
}

/// The parts of a split command: the key indexes of each part, and what to send where.
pub struct Plan {
    pub groups: Vec<(u16, Vec<usize>)>,
    pub parts: Vec<(Target, Bytes)>,
    /// For commands split by key (`name key...`): the name, the keys and how the replies
    /// combine, so that a part answered TRYAGAIN (its slot is being migrated and its keys are on
    /// both sides) can be split further into one command per key, each of which follows its
    /// own ASK.
    pub by_key: Option<(Bytes, OwnedArgs, Fanout)>,
}

/// `name key...` split into one command per slot; `fanout` (the command table's
/// [`Fanout::SplitSum`] or [`Fanout::SplitMerge`]) says how the replies combine.
pub fn plan_split(name: &[u8], args: Args<'_>, fanout: Fanout) -> Plan {
    let keys = args.to_vec();
    let groups = group_by_slot(&keys);
    let mut buf = BytesMut::with_capacity(encoded_len(name, args.iter()));
    let parts = groups
        .iter()
        .map(|(slot, idx)| {
            let part: Vec<&[u8]> = idx.iter().map(|&i| keys[i]).collect();
            (
                Target::Slot(*slot),
                write::command_in(&mut buf, name, &part),
            )
        })
        .collect();
    Plan {
        groups,
        parts,
        by_key: Some((Bytes::copy_from_slice(name), args.owned(), fanout)),
    }
}

/// At most how many bytes the commands of a split take: as if every argument were in a
/// command of its own with `name` (array header, the name's and the argument's bulk-string
/// headers, CRLFs). One allocation for all the commands; should it fall short, encoding grows
/// the buffer.
fn encoded_len<'a>(name: &[u8], args: impl Iterator<Item = &'a [u8]>) -> usize {
    args.map(|a| a.len() + name.len() + 40).sum()
}

/// `MSET k v k v...` split into one `MSET` per slot.
pub fn plan_mset(pairs: Args<'_>) -> Plan {
    let keys: Vec<&[u8]> = pairs.iter().step_by(2).collect();
    let groups = group_by_slot(&keys);
    let mut buf = BytesMut::with_capacity(encoded_len(b"MSET", pairs.iter()));
    let parts = groups
        .iter()
        .map(|(slot, idx)| {
            let mut part: Vec<&[u8]> = Vec::with_capacity(idx.len() * 2);
            for &i in idx {
                part.push(&pairs[2 * i]);
                part.push(&pairs[2 * i + 1]);
            }
            (
                Target::Slot(*slot),
                write::command_in(&mut buf, b"MSET", &part),
            )
        })
        .collect();
    Plan {
        groups,
        parts,
        by_key: None,
    }
}

/// The same request for every primary.
pub fn plan_every_primary(primaries: &[String], request: &Bytes) -> Vec<(Target, Bytes)> {
    primaries
        .iter()
        .map(|addr| (Target::Node(addr.clone()), request.clone()))
        .collect()
}

/// Queues every part on its node's connection, in order (see [`Cluster::submit_many`]).
pub async fn submit_all(
    cluster: &Cluster,
    parts: Vec<(Target, Bytes)>,
    resp3: bool,
) -> Vec<Submitted> {
    cluster.submit_many(parts, resp3).await
}

/// Every part's reply, in part order.
///
/// Every part is on the wire already, so their first replies are simply taken in order. Only
/// the parts whose first reply is not the answer (a redirection, a lost or unreachable node)
/// become futures that follow up, all in parallel. A following future per part from the start
/// (as this was) cost more than the rest of the fan-out: for 1000 parts, a thousand large
/// futures allocated and moved (callgrind: memcpy and malloc were a quarter of keyward's
/// instructions on a cluster `REMOVEKEYS` of 1000 keys over 1000 slots).
pub async fn replies(cluster: &Cluster, submitted: Vec<Submitted>) -> Vec<Bytes> {
    let mut replies = Vec::with_capacity(submitted.len());
    let mut to_follow = Vec::new();
    for (index, mut part) in submitted.into_iter().enumerate() {
        match std::future::poll_fn(|cx| part.poll_first(cx)).await {
            Ok(frame) if !reply::is_error(&frame) => replies.push(frame),
            first => {
                replies.push(Bytes::new());
                to_follow.push((index, part, first));
            }
        }
    }
    let followed =
        join_all(
            to_follow
                .into_iter()
                .map(|(index, part, first)| async move {
                    (index, cluster.follow_from(part, first).await)
                }),
        )
        .await;
    for (index, frame) in followed {
        replies[index] = frame;
    }
    replies
}

/// Replaces every TRYAGAIN reply of a split-by-key plan with the combined replies of one
/// command per key: integers summed, or, for `MGET`, the values in key order.
pub async fn split_tryagain(
    cluster: &Cluster,
    plan_groups: &[(u16, Vec<usize>)],
    by_key: &(Bytes, OwnedArgs, Fanout),
    replies: &mut [Bytes],
    resp3: bool,
) {
    let (name, keys, fanout) = by_key;
    let keys = keys.args();
    let mget = *fanout == Fanout::SplitMerge;
    for ((slot, idx), reply) in plan_groups.iter().zip(replies.iter_mut()) {
        if !reply.starts_with(b"-TRYAGAIN") {
            continue;
        }
        let singles = idx.iter().map(|&i| {
            let cmd = write::command(name, &[&keys[i]]);
            cluster.execute(Target::Slot(*slot), cmd, resp3)
        });
        let answers = join_all(singles).await;
        if let Some(error) = answers.iter().find(|a| reply::is_error(a)) {
            *reply = error.clone();
        } else if mget {
            let values: Option<Vec<Bytes>> = answers
                .iter()
                .map(|a| elements(a).and_then(|e| e.into_iter().next()))
                .collect();
            if let Some(values) = values {
                *reply = array(&values);
            }
        } else {
            let total: Option<i64> = answers.iter().map(|a| reply::integer(a)).sum();
            if let Some(total) = total {
                *reply = write::int(total);
            }
        }
    }
}

/// The outcome of a split-and-sum command.
#[derive(Debug, Default)]
pub struct Sum {
    pub total: i64,
    /// Slots whose command failed: (slot, number of keys, error text).
    pub failures: Vec<(u16, usize, String)>,
}

/// Adds the integer replies of a split command.
pub fn sum(groups: &[(u16, Vec<usize>)], replies: &[Bytes]) -> Sum {
    let mut sum = Sum::default();
    for ((slot, idx), frame) in groups.iter().zip(replies) {
        match reply::integer(frame) {
            Some(n) => sum.total += n,
            None => sum.failures.push((*slot, idx.len(), error_text(frame))),
        }
    }
    sum
}

/// Puts the values of per-slot `MGET`s back in the client's key order.
pub fn merge_mget(groups: &[(u16, Vec<usize>)], replies: &[Bytes], keys: usize) -> Bytes {
    let mut values: Vec<Bytes> = vec![Bytes::new(); keys];
    for ((_, idx), frame) in groups.iter().zip(replies) {
        let Some(elements) = elements(frame).filter(|e| e.len() == idx.len()) else {
            return error_or(frame, "ERR keyward: unexpected MGET reply from a node");
        };
        for (i, element) in idx.iter().zip(elements) {
            values[*i] = element;
        }
    }
    array(&values)
}

/// `DBSIZE`: the sum over primaries.
pub fn sum_integers(replies: &[Bytes]) -> Bytes {
    let mut total = 0;
    for frame in replies {
        match reply::integer(frame) {
            Some(n) => total += n,
            None => return frame.clone(),
        }
    }
    write::int(total)
}

/// `KEYS`: every primary's keys, one array.
pub fn concat_arrays(replies: &[Bytes]) -> Bytes {
    let mut all = Vec::new();
    for frame in replies {
        match elements(frame) {
            Some(e) => all.extend(e),
            None => return error_or(frame, "ERR keyward: unexpected reply from a node"),
        }
    }
    array(&all)
}

/// `OK` when every part said so; otherwise the error, saying whether other parts were applied.
pub fn all_ok(replies: &[Bytes]) -> Bytes {
    let failed: Vec<&Bytes> = replies.iter().filter(|r| reply::is_error(r)).collect();
    match failed.first() {
        None => write::simple("OK"),
        Some(first) if failed.len() == replies.len() => (*first).clone(),
        Some(first) => write::error(&format!(
            "ERR keyward: {} of {} parts failed (the others were applied): {}",
            failed.len(),
            replies.len(),
            error_text(first)
        )),
    }
}

/// Bits of a keyward SCAN cursor that hold the node's position in the primary list.
const NODE_BITS: u32 = 10;

/// A SCAN step: which primary (by index) and the request for it.
pub struct ScanStep {
    pub node: usize,
    pub target: Target,
    pub request: Bytes,
}

/// `SCAN cursor [options]` visits one primary after the other. keyward's cursor is the node's
/// own cursor shifted left by [`NODE_BITS`], plus the node's index in the sorted primary list.
pub fn plan_scan(primaries: &[String], args: Args<'_>) -> Result<ScanStep, Bytes> {
    let cursor = args
        .get(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| write::error("ERR invalid cursor"))?;
    let node = (cursor & ((1 << NODE_BITS) - 1)) as usize;
    let addr = primaries
        .get(node)
        .ok_or_else(|| write::error("ERR invalid cursor"))?;
    let node_cursor = (cursor >> NODE_BITS).to_string();
    let mut forwarded = args.from(1).to_vec();
    forwarded[0] = node_cursor.as_bytes();
    Ok(ScanStep {
        node,
        target: Target::Node(addr.clone()),
        request: write::command(&args[0], &forwarded),
    })
}

/// The client's SCAN reply from one node's reply.
pub fn finish_scan(frame: &Bytes, node: usize, primaries: usize) -> Bytes {
    let Some(parts) = elements(frame).filter(|p| p.len() == 2) else {
        return error_or(frame, "ERR keyward: unexpected SCAN reply from a node");
    };
    let Some(next) = bulk_text(&parts[0]).and_then(|t| t.parse::<u64>().ok()) else {
        return write::error("ERR keyward: unexpected SCAN cursor from a node");
    };
    let next = if next != 0 {
        if next >> (64 - NODE_BITS) != 0 {
            return write::error("ERR keyward: node cursor too large to combine");
        }
        (next << NODE_BITS) | node as u64
    } else if node + 1 < primaries {
        (node + 1) as u64
    } else {
        0
    };
    let mut out = BytesMut::new();
    out.put_slice(b"*2\r\n");
    let text = next.to_string();
    out.put_slice(format!("${}\r\n{text}\r\n", text.len()).as_bytes());
    out.put_slice(&parts[1]);
    out.freeze()
}

fn bulk_text(frame: &Bytes) -> Option<String> {
    let rest = frame.strip_prefix(b"$")?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let body = rest.get(end + 2..end + 2 + len)?;
    String::from_utf8(body.to_vec()).ok()
}

fn error_or(frame: &Bytes, otherwise: &str) -> Bytes {
    if reply::is_error(frame) {
        frame.clone()
    } else {
        write::error(otherwise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_keeps_key_order_within_slots() {
        let keys = [&b"{a}1"[..], b"{b}1", b"{a}2", b"{b}2", b"{a}3"];
        let groups = group_by_slot(&keys);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0], (slot_of(b"a"), vec![0, 2, 4]));
        assert_eq!(groups[1], (slot_of(b"b"), vec![1, 3]));
    }

    #[test]
    fn grouping_many_keys_matches_a_plain_map() {
        let keys: Vec<Vec<u8>> = (0..3000)
            .map(|i| format!("{{t{}}}:{i}", i % 37).into_bytes())
            .collect();
        let groups = group_by_slot(&keys);
        let mut expected: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
        for (i, k) in keys.iter().enumerate() {
            expected.entry(slot_of(k)).or_default().push(i);
        }
        assert_eq!(groups.len(), expected.len());
        for (slot, idx) in &groups {
            assert_eq!(&expected[slot], idx);
        }
    }
}
