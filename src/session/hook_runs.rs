//! Invalidation hooks on the RESP path: the `RUNHOOK` command, and the hooks a write through
//! keyward triggers, run once Redis has answered the write and before its reply is delivered,
//! so that a client that reads its cache after its write's reply never sees the old entry.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::SessionContext;
use crate::commands::CommandSpec;
use crate::hooks::{Params, Trigger};
use crate::keyops::{Caller, KeyOps, RemoveError, Rules};
use crate::protocol::args::Args;
use crate::protocol::{reply, write};

/// A hook run to wait for before a reply is delivered.
pub(crate) type HookFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The hooks a request triggered, run when its reply comes (if the reply is not an error).
#[derive(Debug)]
pub(crate) struct HookRuns {
    ops: Arc<KeyOps>,
    rules: Rules,
    caller: Caller,
    /// Each trigger, with its write's place in EXEC's reply (None: the reply is the write's).
    triggers: Vec<(Option<usize>, Trigger)>,
}

impl HookRuns {
    /// The runs due for `frame`: every trigger of a write whose reply is not an error.
    pub(crate) fn due(&self, frame: &[u8]) -> Option<HookFuture> {
        let exec_replies = self
            .triggers
            .iter()
            .any(|(at, _)| at.is_some())
            .then(|| reply::elements(&Bytes::copy_from_slice(frame)))
            .flatten();
        let due: Vec<Trigger> = self
            .triggers
            .iter()
            .filter(|(at, _)| match at {
                None => !reply::is_error(frame),
                Some(i) => exec_replies
                    .as_ref()
                    .and_then(|replies| replies.get(*i))
                    .is_some_and(|r| !reply::is_error(r)),
            })
            .map(|(_, trigger)| trigger.clone())
            .collect();
        if due.is_empty() {
            return None;
        }
        let ops = self.ops.clone();
        let rules = self.rules.clone();
        let caller = self.caller.clone();
        Some(Box::pin(async move {
            let runs = due
                .iter()
                .map(|t| ops.run_hook(&rules, &caller, &t.hook, &t.params));
            for (trigger, result) in due.iter().zip(futures_util::future::join_all(runs).await) {
                if let Err(e) = result {
                    tracing::warn!(
                        client = %caller.peer,
                        hook = %trigger.hook.name,
                        error = %e,
                        "a hook triggered by a write failed; the write's reply is delivered"
                    );
                }
            }
        }))
    }
}

/// The hooks of one client: what its writes triggered inside an open transaction.
#[derive(Debug, Default)]
pub(crate) struct ClientHooks {
    /// Commands queued in the open transaction so far.
    queued: usize,
    /// Triggers of queued writes, with their place in EXEC's reply.
    pending: Vec<(usize, Trigger)>,
}

impl ClientHooks {
    /// The hooks a request triggers, if any: a write (by the command table's flag) of a key
    /// that matches an `on_write` template. Inside MULTI they wait for EXEC (`tx`).
    pub(crate) fn after_request(
        &mut self,
        ctx: &SessionContext,
        ops: &Arc<KeyOps>,
        caller: impl FnOnce() -> Caller,
        spec: Option<&CommandSpec>,
        args: Args<'_>,
        tx: Transaction,
    ) -> Option<Box<HookRuns>> {
        let mut triggers = Vec::new();
        if ctx.hooks.watches_writes()
            && let Some(spec) = spec
            && spec.writes
        {
            for i in spec.keys.positions(args.len()) {
                if let Some(key) = args.get(i) {
                    ctx.hooks.on_write(key, &mut triggers);
                }
            }
        }
        if triggers.is_empty() && matches!(tx, Transaction::None | Transaction::NotQueued) {
            return None;
        }
        let triggers: Vec<(Option<usize>, Trigger)> = match tx {
            Transaction::None => triggers.into_iter().map(|t| (None, t)).collect(),
            Transaction::Queued => {
                let at = self.queued;
                self.queued += 1;
                self.pending.extend(triggers.into_iter().map(|t| (at, t)));
                return None;
            }
            Transaction::NotQueued => return None,
            Transaction::Starts | Transaction::Ends => {
                self.queued = 0;
                std::mem::take(&mut self.pending)
                    .into_iter()
                    .filter(|_| tx == Transaction::Ends)
                    .map(|(at, t)| (Some(at), t))
                    .collect()
            }
        };
        (!triggers.is_empty()).then(|| {
            Box::new(HookRuns {
                ops: ops.clone(),
                rules: ctx.rules(),
                caller: caller(),
                triggers,
            })
        })
    }
}

/// Where a request stands towards a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transaction {
    /// Outside MULTI.
    None,
    /// Queued inside MULTI: its reply is in EXEC's.
    Queued,
    /// Inside MULTI, answered at once and not in EXEC's reply (WATCH, a nested MULTI).
    NotQueued,
    /// MULTI, DISCARD or RESET: whatever was queued is forgotten.
    Starts,
    /// EXEC: the queued writes' hooks run with its reply.
    Ends,
}

/// `RUNHOOK name [param value ...]`: the hook's keys removed (an integer), or an error.
pub(crate) async fn run_hook_command(
    ctx: &SessionContext,
    ops: &Arc<KeyOps>,
    caller: Caller,
    args: Args<'_>,
    in_transaction: bool,
) -> Bytes {
    if in_transaction {
        return write::error(
            "ERR keyward: RUNHOOK cannot run inside MULTI; run it after EXEC (the hooks of \
             writes inside MULTI run after EXEC on their own)",
        );
    }
    if args.len() < 2 || !args.len().is_multiple_of(2) {
        return write::error("ERR wrong number of arguments for 'runhook' command");
    }
    let Some(hook) = ctx.hooks.get(&args[1]) else {
        return write::error(&format!(
            "ERR keyward: no hook named '{}'",
            crate::printable::printable_key(&args[1])
        ));
    };
    let mut params = Params::new();
    let mut i = 2;
    while i + 1 < args.len() {
        params.set(&String::from_utf8_lossy(&args[i]), args[i + 1].to_vec());
        i += 2;
    }
    match ops.run_hook(&ctx.rules(), &caller, hook, &params).await {
        Ok(removed) => write::int(removed.removed),
        Err(RemoveError::Upstream { removed, message }) => write::error(&format!(
            "ERR keyward: hook '{}' removed {removed} keys, then Redis failed: {message}",
            hook.name
        )),
        Err(e) => write::error(&e.to_string()),
    }
}
