//! The session front: what happens to every request before a backend sees it, and what every
//! client has whatever it is connected to.
//!
//! [`Front::admit`] takes one scanned request through the login gate, the commands keyward
//! answers itself (QUIT, the SYNC/PSYNC/REPLCONF refusal) and the guard, and returns what to do
//! with it: answer it here, close after it, or forward it with what must happen once its reply
//! comes ([`ReplyWatch`]: the audit line of a guarded request, and forgetting connections kept
//! ready after a command that changes how connections log in). A new rule, metric or hook on
//! the request path goes here, once, for every backend.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::SessionContext;
use super::hook_runs::{self, ClientHooks, HookFuture, HookRuns, Transaction};
use crate::audit::{self, Audit};
use crate::auth::{self, ClientAuth, Gate, Login};
use crate::commands::{self, CommandSpec, ReplySwitch, Role};
use crate::guard::{GuardMode, Refusal, Verdict};
use crate::keyops::{Caller, KeyOps};
use crate::metrics::{self, Outcome, Stamp};
use crate::protocol::args::Args;
use crate::protocol::request::{Request, RequestScanner};
use crate::protocol::write;
use crate::upstream::WarmPool;

/// What keyward answers a replication handshake. A replication stream is not a client session,
/// and Redis does not answer REPLCONF from a client at all, which would shift every later reply.
const REPLICATION_REFUSED: &str = "ERR keyward: SYNC, PSYNC and REPLCONF are not supported \
     through keyward; replicate from Redis directly";

/// Whether replies reach the client (`CLIENT REPLY ON|OFF|SKIP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyMode {
    On,
    Off,
    /// The next command gets no reply.
    SkipNext,
}

impl ReplyMode {
    /// Whether the next request's reply reaches the client; a SKIP is used up by it.
    pub(crate) fn take_delivery(&mut self) -> bool {
        match *self {
            ReplyMode::On => true,
            ReplyMode::Off => false,
            ReplyMode::SkipNext => {
                *self = ReplyMode::On;
                false
            }
        }
    }

    /// Applies `CLIENT REPLY <switch>`. Returns whether Redis answers the CLIENT REPLY itself:
    /// only `ON` is answered (`OFF` and `SKIP` are not, and `SKIP` under `OFF` changes nothing).
    pub(crate) fn switch(&mut self, switch: ReplySwitch) -> bool {
        match switch {
            ReplySwitch::On => {
                *self = ReplyMode::On;
                true
            }
            ReplySwitch::Off => {
                *self = ReplyMode::Off;
                false
            }
            ReplySwitch::Skip => {
                if *self == ReplyMode::On {
                    *self = ReplyMode::SkipNext;
                }
                false
            }
        }
    }
}

/// Counts a request keyward answered itself (no duration: it never went anywhere).
fn count_local(spec: Option<&CommandSpec>, outcome: Outcome) {
    if let Some(m) = metrics::get() {
        m.answered(Stamp::new(commands::id_of(spec), None), outcome, None);
    }
}

/// Logs that a client is being closed for idling (`idle_timeout_ms`).
pub(crate) fn note_idle_close(peer: SocketAddr, idle_timeout: std::time::Duration) {
    tracing::info!(
        client = %peer,
        idle_timeout_ms = idle_timeout.as_millis() as u64,
        "closing idle client"
    );
}

/// What the session does with a request.
pub(crate) enum Admission {
    /// keyward answers it; nothing goes upstream. `refused`: the answer is an error that,
    /// inside MULTI, must make EXEC fail as a command Redis rejects at queue time would.
    Answer { reply: Bytes, refused: bool },
    /// QUIT: answered `+OK`, then the connection closes once the replies before it are out.
    Quit,
    /// The backend takes it from here.
    Forward(Admitted),
}

/// What the backend needs to know about a request it is to forward (the request itself stays
/// with the caller: moving it through the front would copy it on every request).
pub(crate) struct Admitted {
    pub spec: Option<&'static CommandSpec>,
    pub role: Role,
    /// The name the command is sent upstream under, when the guard rewrites it (`REMOVEKEYS`
    /// becomes `UNLINK` or `DEL`).
    pub rename: Option<&'static str>,
    /// What to do when its reply comes; None for nearly every request.
    pub watch: Option<Box<ReplyWatch>>,
}

/// What happens once the reply to a request has come, whichever backend brought it.
#[derive(Debug)]
pub(crate) struct ReplyWatch {
    /// The command's id in the table, for its metrics.
    command: u16,
    /// The audit line of a guarded request.
    audit: Option<Audit>,
    /// Connections kept ready to forget: the request changes how new connections log in
    /// (`CONFIG SET requirepass`, `ACL SETUSER`...), so those opened before its reply may not be
    /// in the state that a connection opened now would be in.
    ready_connections: Option<Arc<WarmPool>>,
    /// Invalidation hooks the request (a write, or EXEC of queued writes) triggered.
    hooks: Option<Box<HookRuns>>,
}

impl ReplyWatch {
    /// The reply is `frame`.
    pub(crate) fn answered(&self, frame: &[u8]) {
        if let Some(audit) = &self.audit {
            audit.answered(frame);
            if let (Some(m), Some(n)) = (metrics::get(), crate::protocol::reply::integer(frame)) {
                m.keys_removed(self.command, n);
            }
        }
        self.after_reply();
    }

    /// The reply `frame` has come and is about to be delivered: what [`answered`]
    /// (Self::answered) does, then the hooks the request triggered, which must end before the
    /// client reads the reply.
    pub(crate) async fn settle(&self, frame: &[u8]) {
        self.answered(frame);
        if let Some(run) = self.hooks_due(frame) {
            run.await;
        }
    }

    /// The hook runs that must end before the reply `frame` is delivered (the request's writes
    /// succeeded and triggered hooks); None for nearly every reply.
    pub(crate) fn hooks_due(&self, frame: &[u8]) -> Option<HookFuture> {
        self.hooks.as_ref().and_then(|h| h.due(frame))
    }

    /// Takes the hook runs out, for a reply that is put together from several (a cluster
    /// fan-out), which then asks them with [`HookRuns::due`].
    pub(crate) fn take_hooks(&mut self) -> Option<Box<HookRuns>> {
        self.hooks.take()
    }

    /// A guarded delete split over several nodes removed `n` keys in all.
    pub(crate) fn removed(&self, n: i64) {
        if let Some(m) = metrics::get() {
            m.keys_removed(self.command, n);
        }
    }

    /// The outcome, in words, of a request that no single frame answers (a cluster fan-out).
    pub(crate) fn outcome(&self, words: &str) {
        if let Some(audit) = &self.audit {
            audit.log(words);
        }
        self.after_reply();
    }

    fn after_reply(&self) {
        if let Some(pool) = &self.ready_connections {
            pool.forget_ready();
        }
    }
}

/// Per-client state that every backend shares.
pub(crate) struct Front {
    pub peer: SocketAddr,
    pub login: Login,
    pub reply_mode: ReplyMode,
    commands: commands::LookupCache,
    /// A command that changes how connections log in was queued in the open transaction: its
    /// effect comes with EXEC's reply.
    login_change_queued: bool,
    /// The max_pending_replies log line has been written for this client.
    told_pending_limit: bool,
    /// What hooks (RUNHOOK, the hooks of writes) run over.
    key_ops: Arc<KeyOps>,
    hooks: ClientHooks,
}

impl Front {
    pub(crate) fn new(peer: SocketAddr, auth: Option<&ClientAuth>, key_ops: Arc<KeyOps>) -> Self {
        Front {
            peer,
            login: Login::new(auth),
            reply_mode: ReplyMode::On,
            commands: commands::LookupCache::default(),
            login_change_queued: false,
            told_pending_limit: false,
            key_ops,
            hooks: ClientHooks::default(),
        }
    }

    /// Who this client is, for the guard and the audit lines of the hooks it runs.
    fn caller(&self) -> Caller {
        Caller::of(self.peer, &self.login)
    }

    /// Takes a reload that replaced `before` with `after` into account: the login (false when
    /// the client must be disconnected: its user is gone or its password changed) and the
    /// scanner's limits.
    pub(crate) fn reloaded(
        &mut self,
        before: &SessionContext,
        after: &SessionContext,
        scanner: &mut RequestScanner,
    ) -> bool {
        scanner.set_limits(after.limits);
        match auth::relogin(&self.login, before.auth.as_deref(), after.auth.as_deref()) {
            Some(login) => {
                self.login = login;
                scanner.set_unauthenticated(!self.login.is_authenticated());
                true
            }
            None => {
                tracing::info!(
                    client = %self.peer,
                    "closing the client: a reload removed its user or changed its password"
                );
                false
            }
        }
    }

    /// A new scanner for this client, with Redis's caps for clients that have not logged in
    /// while that is the case.
    pub(crate) fn scanner(&self, ctx: &SessionContext) -> RequestScanner {
        let mut scanner = RequestScanner::new(ctx.limits);
        scanner.set_unauthenticated(!self.login.is_authenticated());
        scanner
    }

    /// How many requests may wait for replies: `max_pending_replies`, or a handful before the
    /// client has logged in.
    pub(crate) fn pending_limit(&self, ctx: &SessionContext) -> usize {
        self.login.pending_limit(ctx.max_pending_replies)
    }

    /// Logs, once per client, that it stopped being read because it does not read its replies.
    pub(crate) fn note_pending_limit(&mut self, limit: usize) {
        if !self.told_pending_limit {
            self.told_pending_limit = true;
            tracing::info!(
                client = %self.peer,
                max_pending_replies = limit,
                "client has reached max_pending_replies; not reading it until it reads replies"
            );
        }
    }

    /// Decides what happens to `request` (the login gate may rebuild it: a `HELLO` loses its
    /// `AUTH` option). `in_transaction`: the client is inside MULTI. `ready_connections`: the
    /// pool of connections the backend keeps ready, if any.
    pub(crate) async fn admit(
        &mut self,
        ctx: &SessionContext,
        ready_connections: Option<&Arc<WarmPool>>,
        request: &mut Request,
        in_transaction: bool,
        scanner: &mut RequestScanner,
    ) -> Admission {
        let spec = self.commands.lookup(&request.args()[0]);
        // Without client authentication there is nothing to check: no future to build.
        match ctx.auth.as_deref() {
            None => {}
            Some(client_auth) => {
                // Boxed: rarely waited on, and inline its state would enlarge every session's
                // task, which is most of keyward's memory per client.
                let gate = Box::pin(auth::gate(
                    client_auth,
                    &mut self.login,
                    self.peer.ip(),
                    spec,
                    request,
                    in_transaction,
                ))
                .await;
                scanner.set_unauthenticated(!self.login.is_authenticated());
                if let Gate::Answer(reply) = gate {
                    let refused = reply.starts_with(b"-");
                    count_local(spec, Outcome::of_reply(&reply));
                    return Admission::Answer { reply, refused };
                }
            }
        }
        if spec.is_some_and(|s| s.role == Role::RunHook) {
            // `deny_commands` may list RUNHOOK too.
            if let Verdict::Refuse(refusal) =
                ctx.guard
                    .check_as(spec, request.args(), self.login.rights())
            {
                return self.refuse(spec, request.args(), refusal);
            }
            // Boxed, as the gate is: inline, its state would enlarge every request's future.
            let reply = Box::pin(hook_runs::run_hook_command(
                ctx,
                &self.key_ops,
                self.caller(),
                request.args(),
                in_transaction,
            ))
            .await;
            let refused = reply.starts_with(b"-");
            count_local(spec, Outcome::of_reply(&reply));
            return Admission::Answer { reply, refused };
        }
        if spec.is_some_and(|s| s.role == Role::RemoveKeysPreview)
            && let Some(refused) = self.preview(ctx, spec, request)
        {
            return refused;
        }
        self.decide(ctx, ready_connections, spec, request, in_transaction)
    }

    /// The answer to a request the guard refuses; nothing goes upstream.
    fn refuse(&self, spec: Option<&CommandSpec>, args: Args<'_>, refusal: Refusal) -> Admission {
        audit::refused(self.peer, self.login.user(), args, refusal.rule.name());
        if let Some(m) = metrics::get() {
            let command = commands::id_of(spec);
            m.refused(command, refusal.rule, false);
            m.answered(Stamp::new(command, None), Outcome::Refused, None);
        }
        Admission::Answer {
            reply: write::error(&refusal.message),
            refused: true,
        }
    }

    /// Dry run: a request the guard would refuse, logged and counted, then let through.
    fn would_refuse(&self, spec: Option<&CommandSpec>, args: Args<'_>, rule: crate::guard::Rule) {
        audit::would_refuse(self.peer, self.login.user(), args, rule.name());
        if let Some(m) = metrics::get() {
            m.refused(commands::id_of(spec), rule, true);
        }
    }

    /// `REMOVEKEYS.PREVIEW key...`: every rule of the guard (not the rate limit, which it
    /// does not draw on), then, when they pass, the request becomes `EXISTS` of the distinct
    /// keys: the number a `REMOVEKEYS` would remove now. Returns the refusal, if any.
    fn preview(
        &self,
        ctx: &SessionContext,
        spec: Option<&CommandSpec>,
        request: &mut Request,
    ) -> Option<Admission> {
        match ctx
            .guard
            .check_as(spec, request.args(), self.login.rights())
        {
            Verdict::Refuse(refusal) => return Some(self.refuse(spec, request.args(), refusal)),
            Verdict::WouldRefuse { rule, .. } => self.would_refuse(spec, request.args(), rule),
            Verdict::Forward | Verdict::Rewrite(_) => {}
        }
        let exists = {
            let args = request.args();
            let mut seen = std::collections::HashSet::with_capacity(args.len());
            let mut words: Vec<&[u8]> = Vec::with_capacity(args.len());
            words.push(b"EXISTS");
            words.extend(args.from(1).iter().filter(|k| seen.insert(*k)));
            Request::from_args(&words)
        };
        *request = exists;
        None
    }

    /// The rate limit's verdict on a delete the guard let through (`verdict`).
    fn rate_limited(
        &self,
        ctx: &SessionContext,
        spec: Option<&CommandSpec>,
        request: &Request,
        verdict: Verdict,
    ) -> Verdict {
        let Some(spec) = spec else {
            return verdict;
        };
        // No limit (the default): nothing to count, no name to make for a message.
        if ctx.guard.delete_rate(self.login.rights()).is_none() {
            return verdict;
        }
        let keys = commands::removed_keys(spec, request.args()).len();
        let refusal = crate::rate_limit::check(
            &ctx.rates,
            &ctx.guard,
            self.login.rights(),
            || crate::rate_limit::who(self.login.user(), self.peer.ip()),
            &audit::command_name(&request.args()[0]),
            keys,
        );
        match (refusal, ctx.guard.mode()) {
            (None, _) => verdict,
            (Some(refusal), GuardMode::Enforce) => Verdict::Refuse(refusal),
            (Some(refusal), GuardMode::DryRun) => Verdict::WouldRefuse {
                rule: refusal.rule,
                rename: match verdict {
                    Verdict::Rewrite(delete) => Some(delete),
                    _ => None,
                },
            },
        }
    }

    /// Everything after the login gate: keyward's own answers, the guard, the reply watch.
    fn decide(
        &mut self,
        ctx: &SessionContext,
        ready_connections: Option<&Arc<WarmPool>>,
        spec: Option<&'static CommandSpec>,
        request: &Request,
        in_transaction: bool,
    ) -> Admission {
        let role = spec.map_or(Role::Ordinary, |s| s.role);
        match role {
            Role::Quit => {
                count_local(spec, Outcome::Ok);
                return Admission::Quit;
            }
            Role::Replication => {
                count_local(spec, Outcome::Error);
                return Admission::Answer {
                    reply: write::error(REPLICATION_REFUSED),
                    refused: false,
                };
            }
            _ => {}
        }

        let verdict = if role == Role::RemoveKeysPreview {
            // Checked in `preview`, before it became EXISTS.
            Verdict::Forward
        } else {
            ctx.guard
                .check_as(spec, request.args(), self.login.rights())
        };
        // The rate limit, last of the rules, for deletes every other rule let through.
        let verdict = match verdict {
            Verdict::Forward | Verdict::Rewrite(_)
                if matches!(role, Role::Delete | Role::RemoveKeys) =>
            {
                self.rate_limited(ctx, spec, request, verdict)
            }
            verdict => verdict,
        };
        let rename = match verdict {
            Verdict::Refuse(refusal) => return self.refuse(spec, request.args(), refusal),
            // Dry run: logged now, forwarded as if allowed.
            Verdict::WouldRefuse { rule, rename } => {
                self.would_refuse(spec, request.args(), rule);
                rename.map(|delete| delete.name())
            }
            Verdict::Rewrite(delete) => Some(delete.name()),
            Verdict::Forward => None,
        };

        // The audit line names the command as the client sent it (REMOVEKEYS, not UNLINK).
        let audit = matches!(role, Role::Delete | Role::RemoveKeys)
            .then(|| Audit::start(self.peer, self.login.user(), request.args()));
        if let (Some(audit), Some(m)) = (&audit, metrics::get()) {
            m.keys_requested(commands::id_of(spec), audit.keys);
        }
        let changes_login = self.changes_login(spec, role, request, in_transaction);
        let ready_connections = ready_connections.filter(|_| changes_login).cloned();
        // Without hooks on writes (most configurations) nothing is looked at; with them, only
        // writes and the commands that open and close transactions.
        let hooks = if ctx.hooks.watches_writes()
            && (in_transaction
                || spec.is_some_and(|s| s.writes)
                || matches!(role, Role::Multi | Role::Discard | Role::Reset))
        {
            self.write_hooks(ctx, spec, role, request, in_transaction)
        } else {
            None
        };
        let watch =
            (audit.is_some() || ready_connections.is_some() || hooks.is_some()).then(|| {
                Box::new(ReplyWatch {
                    command: commands::id_of(spec),
                    audit,
                    ready_connections,
                    hooks,
                })
            });
        Admission::Forward(Admitted {
            spec,
            role,
            rename,
            watch,
        })
    }

    /// The hooks this request's writes trigger (inside MULTI: with EXEC).
    // Out of line: `decide` stays small for the configurations without hooks.
    #[inline(never)]
    fn write_hooks(
        &mut self,
        ctx: &SessionContext,
        spec: Option<&CommandSpec>,
        role: Role,
        request: &Request,
        in_transaction: bool,
    ) -> Option<Box<HookRuns>> {
        let transaction = match role {
            Role::Multi | Role::Watch if in_transaction => Transaction::NotQueued,
            Role::Multi | Role::Discard | Role::Reset => Transaction::Starts,
            Role::Exec if in_transaction => Transaction::Ends,
            _ if in_transaction => Transaction::Queued,
            _ => Transaction::None,
        };
        let (peer, login) = (self.peer, &self.login);
        self.hooks.after_request(
            ctx,
            &self.key_ops,
            || Caller::of(peer, login),
            spec,
            request.args(),
            transaction,
        )
    }

    /// Whether the reply to this request is when new connections start to log in differently.
    /// Inside MULTI that is EXEC's reply.
    fn changes_login(
        &mut self,
        spec: Option<&CommandSpec>,
        role: Role,
        request: &Request,
        in_transaction: bool,
    ) -> bool {
        let changes = spec.is_some_and(|s| s.changes_login(request.args()));
        match role {
            Role::Exec => std::mem::take(&mut self.login_change_queued),
            Role::Discard | Role::Reset => {
                self.login_change_queued = false;
                false
            }
            _ if changes && in_transaction => {
                self.login_change_queued = true;
                false
            }
            _ => changes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::User;
    use crate::guard::{GuardConfig, GuardMode, GuardPolicy};
    use crate::protocol::request::ScanLimits;
    use crate::upstream::UpstreamTarget;

    fn context(auth: Option<ClientAuth>) -> SessionContext {
        SessionContext {
            guard: Arc::new(GuardPolicy::new(&GuardConfig::default())),
            rates: Arc::default(),
            limits: ScanLimits {
                max_bulk_len: 1 << 20,
                max_args: 1024,
                max_query_buffer: 1 << 20,
            },
            auth: auth.map(Arc::new),
            close_grace: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            max_pending_replies: 16,
            max_client_output_bytes: 0,
            hooks: Arc::new(crate::hooks::HookSet::empty()),
        }
    }

    /// A pool that keeps no connection (and so never dials).
    fn empty_pool() -> Arc<WarmPool> {
        WarmPool::start(empty_pool_target(), 0)
    }

    /// An upstream nobody listens on.
    fn empty_pool_target() -> UpstreamTarget {
        UpstreamTarget {
            addr: "127.0.0.1:1".into(),
            primary: None,
            username: None,
            password: None,
            connect_timeout: Duration::from_millis(10),
            reply_timeout: Duration::ZERO,
            resp3: false,
            tls: None,
        }
    }

    struct Client {
        ctx: SessionContext,
        front: Front,
        scanner: RequestScanner,
        pool: Option<Arc<WarmPool>>,
    }

    impl Client {
        fn new(ctx: SessionContext, pool: Option<Arc<WarmPool>>) -> Self {
            let key_ops = KeyOps::new(crate::cluster::Cluster::single(empty_pool_target()));
            let front = Front::new(
                "127.0.0.1:5000".parse().unwrap(),
                ctx.auth.as_deref(),
                key_ops,
            );
            let scanner = front.scanner(&ctx);
            Client {
                ctx,
                front,
                scanner,
                pool,
            }
        }

        async fn admit(&mut self, args: &[&str], in_transaction: bool) -> Admission {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let mut request = Request::from_args(&args);
            self.front
                .admit(
                    &self.ctx,
                    self.pool.as_ref(),
                    &mut request,
                    in_transaction,
                    &mut self.scanner,
                )
                .await
        }
    }

    fn answer(admission: Admission) -> (String, bool) {
        match admission {
            Admission::Answer { reply, refused } => {
                (String::from_utf8_lossy(&reply).into_owned(), refused)
            }
            Admission::Quit => panic!("expected an answer, got QUIT"),
            Admission::Forward(a) => panic!("expected an answer, forwarded {:?}", a.role),
        }
    }

    fn forwarded(admission: Admission) -> Admitted {
        match admission {
            Admission::Forward(admitted) => admitted,
            Admission::Quit => panic!("expected a forward, got QUIT"),
            Admission::Answer { reply, .. } => {
                panic!(
                    "expected a forward, got {}",
                    String::from_utf8_lossy(&reply)
                )
            }
        }
    }

    #[tokio::test]
    async fn keyward_answers_quit_and_replication_itself() {
        let mut client = Client::new(context(None), None);
        assert!(matches!(
            client.admit(&["quit"], false).await,
            Admission::Quit
        ));
        for args in [
            &["SYNC"][..],
            &["psync", "?", "-1"],
            &["REPLCONF", "ack", "0"],
        ] {
            let (reply, refused) = answer(client.admit(args, false).await);
            assert_eq!(reply, format!("-{REPLICATION_REFUSED}\r\n"));
            assert!(!refused);
        }
    }

    #[tokio::test]
    async fn the_guard_refuses_before_any_backend_sees_the_request() {
        let mut client = Client::new(context(None), None);
        let (reply, refused) = answer(client.admit(&["DEL", "a", "b*"], false).await);
        assert!(
            reply.starts_with("-ERR keyward guard: DEL refused"),
            "{reply}"
        );
        assert!(refused, "a refusal makes a transaction fail");
        let (reply, _) = answer(client.admit(&["FLUSHALL"], false).await);
        assert!(reply.contains("rule deny_commands"), "{reply}");

        let admitted = forwarded(client.admit(&["REMOVEKEYS", "a", "b"], false).await);
        assert_eq!(admitted.rename, Some("UNLINK"));
        assert!(admitted.watch.is_some(), "a guarded delete is audited");
        let admitted = forwarded(client.admit(&["GET", "a"], false).await);
        assert_eq!((admitted.role, admitted.rename), (Role::Ordinary, None));
        assert!(
            admitted.watch.is_none(),
            "nothing to do after an ordinary reply"
        );
    }

    #[tokio::test]
    async fn dry_run_forwards_what_the_guard_would_refuse() {
        let mut ctx = context(None);
        ctx.guard = Arc::new(GuardPolicy::new(&GuardConfig {
            mode: GuardMode::DryRun,
            ..GuardConfig::default()
        }));
        let mut client = Client::new(ctx, None);
        let admitted = forwarded(client.admit(&["DEL", "a", "b*"], false).await);
        assert_eq!((admitted.role, admitted.rename), (Role::Delete, None));
        assert!(admitted.watch.is_some(), "its reply is audited as usual");
        let admitted = forwarded(client.admit(&["REMOVEKEYS", "a*"], false).await);
        assert_eq!(admitted.rename, Some("UNLINK"));
        let admitted = forwarded(client.admit(&["flushall"], true).await);
        assert!(admitted.rename.is_none());
        // Not a rule but a malformed request: still answered here.
        let (reply, refused) = answer(client.admit(&["REMOVEKEYS"], false).await);
        assert!(reply.contains("wrong number of arguments"), "{reply}");
        assert!(refused);
    }

    #[tokio::test]
    async fn the_login_gate_answers_before_the_login() {
        let users = vec![User {
            name: crate::auth::DEFAULT_USER.into(),
            password_sha256: crate::auth::sha256(b"pw"),
            ..User::default()
        }];
        let mut client = Client::new(context(ClientAuth::new(users)), None);
        let (reply, refused) = answer(client.admit(&["GET", "k"], false).await);
        assert_eq!(reply, "-NOAUTH Authentication required.\r\n");
        assert!(refused);
        assert_eq!(client.front.pending_limit(&client.ctx), 16);
        let (reply, _) = answer(client.admit(&["AUTH", "pw"], false).await);
        assert_eq!(reply, "+OK\r\n");
        forwarded(client.admit(&["GET", "k"], false).await);
    }

    #[tokio::test]
    async fn a_login_change_is_watched_once_its_reply_comes() {
        let mut client = Client::new(context(None), Some(empty_pool()));
        let set = ["CONFIG", "SET", "requirepass", "x"];
        assert!(forwarded(client.admit(&set, false).await).watch.is_some());
        assert!(
            forwarded(client.admit(&["CONFIG", "GET", "x"], false).await)
                .watch
                .is_none()
        );
        // Inside MULTI the change happens at EXEC.
        assert!(forwarded(client.admit(&set, true).await).watch.is_none());
        assert!(
            forwarded(client.admit(&["EXEC"], true).await)
                .watch
                .is_some()
        );
        assert!(
            forwarded(client.admit(&["EXEC"], false).await)
                .watch
                .is_none()
        );
        assert!(forwarded(client.admit(&set, true).await).watch.is_none());
        assert!(
            forwarded(client.admit(&["DISCARD"], true).await)
                .watch
                .is_none()
        );
        assert!(
            forwarded(client.admit(&["EXEC"], false).await)
                .watch
                .is_none()
        );

        // Without connections kept ready there is nothing to forget.
        let mut client = Client::new(context(None), None);
        assert!(forwarded(client.admit(&set, false).await).watch.is_none());
    }

    #[test]
    fn client_reply_switches() {
        let mut mode = ReplyMode::On;
        assert!(!mode.switch(ReplySwitch::Skip));
        assert!(!mode.take_delivery(), "SKIP drops the next reply");
        assert!(mode.take_delivery());
        assert!(!mode.switch(ReplySwitch::Off));
        assert!(
            !mode.switch(ReplySwitch::Skip),
            "SKIP under OFF changes nothing"
        );
        assert_eq!(mode, ReplyMode::Off);
        assert!(mode.switch(ReplySwitch::On), "ON is answered");
        assert!(mode.take_delivery());
    }
}
