//! Key operations that keyward starts itself, not a RESP client: the HTTP API's remove, get and
//! set, and the removals of invalidation hooks.
//!
//! They go over the same backend as RESP clients: the shared pipelined connection of a
//! standalone Redis ([`Cluster::single`]), or the node connections of a Redis Cluster, keys
//! grouped by slot and sent in parallel, redirections followed. A removal goes through the same
//! guard as `REMOVEKEYS`, leaves the same audit line (with `via=http` or `via=hook:<name>`) and
//! counts in the same metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::audit::{Audit, Via};
use crate::auth::Login;
use crate::cluster::fanout;
use crate::cluster::topology::slot_of;
use crate::cluster::{Cluster, Submitted, Target};
use crate::commands::{self, Fanout};
use crate::guard::{
    DeleteCommand, GuardMode, GuardPolicy, NO_RIGHTS, Refusal, Rights, Rule, Verdict,
};
use crate::hooks::{Hook, MissingParam, Params};
use crate::metrics;
use crate::protocol::args::OwnedArgs;
use crate::protocol::reply;
use crate::protocol::write;
use crate::rate_limit::{self, DeleteRates};

/// Who asks for a removal, for the guard, the rate limit and the audit line.
#[derive(Debug, Clone)]
pub struct Caller {
    pub peer: SocketAddr,
    /// The keyward user, when keyward authenticates.
    pub user: Option<Arc<str>>,
    /// The user's rights (bypasses, delete scope, rate); None: none.
    pub rights: Option<Arc<Rights>>,
}

impl Caller {
    /// The client at `peer` with `login` (anyone, without client authentication).
    pub fn of(peer: SocketAddr, login: &Login) -> Caller {
        Caller {
            peer,
            user: login.user().cloned(),
            rights: login.shared_rights(),
        }
    }

    pub fn rights(&self) -> &Rights {
        self.rights.as_deref().unwrap_or(&NO_RIGHTS)
    }
}

/// The rules a removal is checked against: the guard's, and the delete rate buckets.
#[derive(Debug, Clone)]
pub struct Rules {
    pub guard: Arc<GuardPolicy>,
    pub rates: Arc<DeleteRates>,
}

/// Why a removal removed nothing, or not everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveError {
    /// The guard refused the request; nothing was sent to Redis.
    Refused(Refusal),
    /// A hook's parameters do not fill its templates; nothing was sent to Redis.
    MissingParam(MissingParam),
    /// Redis did not remove every key: unreachable, or an error. `removed` keys were removed
    /// before (in a cluster, by the parts that succeeded).
    Upstream { removed: i64, message: String },
}

impl std::fmt::Display for RemoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoveError::Refused(refusal) => f.write_str(&refusal.message),
            RemoveError::MissingParam(missing) => write!(f, "ERR keyward: {missing}"),
            RemoveError::Upstream { message, .. } => f.write_str(message),
        }
    }
}

/// What a removal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Distinct keys asked for.
    pub requested: usize,
    /// Keys Redis removed (missing ones are skipped).
    pub removed: i64,
}

/// Keys and values as the HTTP API reads and writes them.
pub struct SetEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub ttl_ms: Option<u64>,
}

/// The backend keyward's own key operations use.
pub struct KeyOps {
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for KeyOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyOps")
            .field("standalone", &self.cluster.is_single())
            .finish()
    }
}

impl KeyOps {
    /// Drops the connections kept to Redis (Sentinel mode: the primary changed).
    pub fn reset_connections(&self) {
        self.cluster.reset_connections();
    }

    pub fn new(cluster: Arc<Cluster>) -> Arc<KeyOps> {
        Arc::new(KeyOps { cluster })
    }

    /// Removes `keys` (duplicates counted once) if the guard allows it, with the audit line and
    /// the metrics of a `REMOVEKEYS`.
    pub async fn remove_guarded<K: AsRef<[u8]>>(
        &self,
        rules: &Rules,
        caller: &Caller,
        via: Via,
        keys: Vec<K>,
    ) -> Result<Removed, RemoveError> {
        let mut keys = keys;
        dedup_keeping_order(&mut keys);
        let requested = keys.len();
        let (spec, args) = as_request(b"REMOVEKEYS", &keys);
        let args = args.args();
        let command = commands::id_of(spec);
        let refused = |rule: Rule, dry_run: bool| {
            let words = if dry_run { "would refuse" } else { "refused" };
            Audit::start(caller.peer, caller.user.as_ref(), args)
                .via(via.clone())
                .log(&format!("{words}: {}", rule.name()));
            if let Some(m) = metrics::get() {
                m.refused(command, rule, dry_run);
            }
        };
        let delete = match rules.guard.check_as(spec, args, caller.rights()) {
            Verdict::Refuse(refusal) => {
                refused(refusal.rule, false);
                return Err(RemoveError::Refused(refusal));
            }
            Verdict::WouldRefuse { rule, rename } => {
                refused(rule, true);
                rename.unwrap_or(DeleteCommand::Unlink)
            }
            Verdict::Rewrite(delete) => delete,
            Verdict::Forward => DeleteCommand::Unlink,
        };
        if let Some(refusal) = rate_limit::check(
            &rules.rates,
            &rules.guard,
            caller.rights(),
            || rate_limit::who(caller.user.as_ref(), caller.peer.ip()),
            "REMOVEKEYS",
            requested,
        ) {
            let dry_run = rules.guard.mode() == GuardMode::DryRun;
            refused(refusal.rule, dry_run);
            if !dry_run {
                return Err(RemoveError::Refused(refusal));
            }
        }
        let audit = Audit::start(caller.peer, caller.user.as_ref(), args).via(via);
        if let Some(m) = metrics::get() {
            m.keys_requested(command, requested);
        }
        let result = self.remove(delete.name().as_bytes(), &keys).await;
        match &result {
            Ok(removed) => {
                if let Some(m) = metrics::get() {
                    m.keys_removed(command, *removed);
                }
                audit.log(&format!("removed {removed}"));
            }
            Err((removed, message)) => {
                if let Some(m) = metrics::get() {
                    m.keys_removed(command, *removed);
                }
                audit.log(&format!("error: removed {removed}; {message}"));
            }
        }
        match result {
            Ok(removed) => Ok(Removed { requested, removed }),
            Err((removed, message)) => Err(RemoveError::Upstream { removed, message }),
        }
    }

    /// What [`remove_guarded`](Self::remove_guarded) would do: every rule of the guard (not
    /// the rate limit, which a preview does not draw on), then how many of the distinct `keys`
    /// exist now, deleting nothing.
    pub async fn preview_guarded<K: AsRef<[u8]>>(
        &self,
        rules: &Rules,
        caller: &Caller,
        keys: Vec<K>,
    ) -> Result<Removed, RemoveError> {
        let mut keys = keys;
        dedup_keeping_order(&mut keys);
        let (spec, args) = as_request(b"REMOVEKEYS.PREVIEW", &keys);
        let args = args.args();
        let command = commands::id_of(spec);
        match rules.guard.check_as(spec, args, caller.rights()) {
            Verdict::Refuse(refusal) => {
                Audit::start(caller.peer, caller.user.as_ref(), args)
                    .via(Via::Http)
                    .log(&format!("refused: {}", refusal.rule.name()));
                if let Some(m) = metrics::get() {
                    m.refused(command, refusal.rule, false);
                }
                return Err(RemoveError::Refused(refusal));
            }
            Verdict::WouldRefuse { rule, .. } => {
                if let Some(m) = metrics::get() {
                    m.refused(command, rule, true);
                }
            }
            Verdict::Forward | Verdict::Rewrite(_) => {}
        }
        match self.remove(b"EXISTS", &keys).await {
            Ok(existing) => Ok(Removed {
                requested: keys.len(),
                removed: existing,
            }),
            Err((_, message)) => Err(RemoveError::Upstream {
                removed: 0,
                message,
            }),
        }
    }

    /// Runs `hook` with `params` now and, with a `delay_ms`, once more after it (in the
    /// background). The second removal is logged and counted like the first.
    pub async fn run_hook(
        self: &Arc<Self>,
        rules: &Rules,
        caller: &Caller,
        hook: &Arc<Hook>,
        params: &Params,
    ) -> Result<Removed, RemoveError> {
        let keys = match hook.keys(params) {
            Ok(keys) => keys,
            Err(missing) => {
                note_hook_run(&hook.name, "refused");
                tracing::info!(hook = %hook.name, error = %missing, "hook refused");
                return Err(RemoveError::MissingParam(missing));
            }
        };
        let via = Via::Hook(hook.name.clone());
        let result = self
            .remove_guarded(rules, caller, via.clone(), keys.clone())
            .await;
        note_hook_run(&hook.name, outcome_label(&result));
        if result.is_ok() && !hook.delay.is_zero() {
            let ops = self.clone();
            let rules = rules.clone();
            let caller = caller.clone();
            let hook = hook.clone();
            tokio::spawn(async move {
                tokio::time::sleep(hook.delay).await;
                let again = ops.remove_guarded(&rules, &caller, via, keys).await;
                note_hook_run(&hook.name, outcome_label(&again));
                if let Err(e) = again {
                    tracing::warn!(hook = %hook.name, error = %e, "delayed hook removal failed");
                }
            });
        }
        result
    }

    /// Sends `delete key...` (keys distinct): whole to a standalone Redis, one command per slot
    /// to a cluster, the integer replies added (`EXISTS` too). `Err((removed so far, message))`
    /// when any part failed.
    async fn remove<K: AsRef<[u8]>>(
        &self,
        delete: &[u8],
        keys: &[K],
    ) -> Result<i64, (i64, String)> {
        if keys.is_empty() {
            return Ok(0);
        }
        if self.cluster.is_single() {
            let frame = self
                .cluster
                .execute(Target::Any, write::command(delete, keys), false)
                .await;
            return reply::integer(&frame).ok_or_else(|| (0, reply::error_text(&frame)));
        }
        let args = OwnedArgs::from_parts(keys);
        let plan = fanout::plan_split(delete, args.args(), Fanout::SplitSum);
        let mut replies = self.submit_and_wait(plan.parts).await;
        if let Some(by_key) = &plan.by_key {
            fanout::split_tryagain(&self.cluster, &plan.groups, by_key, &mut replies, false).await;
        }
        let sum = fanout::sum(&plan.groups, &replies);
        match sum.failures.first() {
            None => Ok(sum.total),
            Some((slot, _, first)) => {
                let failed: usize = sum.failures.iter().map(|f| f.1).sum();
                Err((
                    sum.total,
                    format!(
                        "{failed} of {} keys in {} slot(s) were not removed; first failure \
                         (slot {slot}): {first}",
                        keys.len(),
                        sum.failures.len()
                    ),
                ))
            }
        }
    }

    /// The values of `keys`, in order (None: missing, or not a string).
    pub async fn get<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>, String> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let frame = if self.cluster.is_single() {
            self.cluster
                .execute(Target::Any, write::command(b"MGET", keys), false)
                .await
        } else {
            let args = OwnedArgs::from_parts(keys);
            let plan = fanout::plan_split(b"MGET", args.args(), Fanout::SplitMerge);
            let mut replies = self.submit_and_wait(plan.parts).await;
            if let Some(by_key) = &plan.by_key {
                fanout::split_tryagain(&self.cluster, &plan.groups, by_key, &mut replies, false)
                    .await;
            }
            fanout::merge_mget(&plan.groups, &replies, keys.len())
        };
        let elements = reply::elements(&frame)
            .filter(|e| e.len() == keys.len())
            .ok_or_else(|| reply::error_text(&frame))?;
        elements.iter().map(|e| bulk_value(e)).collect()
    }

    /// Sets every entry (`SET key value [PX ttl]`), all sent before any reply is read.
    /// `Err((set so far, message))` when any failed.
    pub async fn set(&self, entries: &[SetEntry]) -> Result<usize, (usize, String)> {
        let parts = entries
            .iter()
            .map(|entry| {
                let ttl = entry.ttl_ms.map(|ms| ms.to_string());
                let mut args: Vec<&[u8]> = vec![&entry.key, &entry.value];
                if let Some(ttl) = &ttl {
                    args.push(b"PX");
                    args.push(ttl.as_bytes());
                }
                let target = Target::Slot(slot_of(&entry.key));
                (target, write::command(b"SET", &args))
            })
            .collect();
        let replies = self.submit_and_wait(parts).await;
        let set = replies
            .iter()
            .filter(|r| reply::simple_string(r) == Some(&b"OK"[..]))
            .count();
        match replies.iter().find(|r| reply::is_error(r)) {
            None => Ok(set),
            Some(error) => Err((set, reply::error_text(error))),
        }
    }

    /// Queues every part on its node's connection, writes them, and waits for every reply.
    async fn submit_and_wait(&self, parts: Vec<(Target, Bytes)>) -> Vec<Bytes> {
        let submitted: Vec<Submitted> = fanout::submit_all(&self.cluster, parts, false).await;
        let mut flushed: Vec<&crate::cluster::node::NodeConn> = Vec::new();
        for part in &submitted {
            if let Some(conn) = part.conn()
                && !flushed.iter().any(|c| c.same(conn))
            {
                conn.flush();
                flushed.push(conn);
            }
        }
        fanout::replies(&self.cluster, submitted).await
    }
}

/// `command key...` as the guard sees a client's request, with its entry in the command table:
/// keyward's own removals are checked exactly as a RESP client's `REMOVEKEYS` would be.
fn as_request<K: AsRef<[u8]>>(
    command: &[u8],
    keys: &[K],
) -> (Option<&'static commands::CommandSpec>, OwnedArgs) {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
    parts.push(command);
    parts.extend(keys.iter().map(|k| k.as_ref()));
    (commands::lookup(command), OwnedArgs::from_parts(&parts))
}

/// `ok`, `refused` or `error`: the `result` label of `keyward_hook_runs_total`.
fn outcome_label(result: &Result<Removed, RemoveError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(RemoveError::Refused(_) | RemoveError::MissingParam(_)) => "refused",
        Err(RemoveError::Upstream { .. }) => "error",
    }
}

fn note_hook_run(hook: &str, result: &'static str) {
    if let Some(m) = metrics::get() {
        m.hook_ran(hook, result);
    }
}

/// Removes later duplicates, keeping the first of each key where it was.
fn dedup_keeping_order<K: AsRef<[u8]>>(keys: &mut Vec<K>) {
    if keys.len() < 2 {
        return;
    }
    let first: Vec<bool> = {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        keys.iter().map(|k| seen.insert(k.as_ref())).collect()
    };
    let mut first = first.into_iter();
    keys.retain(|_| first.next().unwrap_or(true));
}

/// The value of one `MGET` element: a bulk string, or nil.
fn bulk_value(frame: &[u8]) -> Result<Option<Bytes>, String> {
    match frame.first() {
        Some(b'_') => Ok(None),
        // `$-1` (nil) reads as no bulk string.
        Some(b'$') => Ok(reply::bulk_string(frame).map(Bytes::copy_from_slice)),
        _ => Err(format!(
            "unexpected MGET element: {}",
            String::from_utf8_lossy(&frame[..frame.len().min(64)])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_removed_in_place() {
        let mut keys: Vec<Vec<u8>> = ["a", "b", "a", "c", "b"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        dedup_keeping_order(&mut keys);
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn mget_elements_become_values() {
        assert_eq!(
            bulk_value(b"$3\r\nabc\r\n").unwrap(),
            Some(Bytes::from_static(b"abc"))
        );
        assert_eq!(bulk_value(b"$-1\r\n").unwrap(), None);
        assert_eq!(bulk_value(b"_\r\n").unwrap(), None);
        assert!(bulk_value(b"-ERR x\r\n").is_err());
    }
}
