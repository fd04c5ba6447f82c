//! Where a routed session sends each admitted request: the shared connection, a connection of
//! the client's own, the owner of its keys' slot, every primary, or several nodes at once.

use bytes::Bytes;

use super::super::front::{Admission, Admitted, ReplyWatch};
use super::super::hook_runs::HookRuns;
use super::reply_queue::Out;
use super::{Deferred, Lane, Next, RoutedSession};
use crate::cluster::fanout::{self, Plan};
use crate::cluster::routing::{Fan, Merge, Route};
use crate::cluster::topology::slot_of;
use crate::cluster::{Cluster, Target, merge};
use crate::commands::{self, ClientSubcommand, Combine, CommandSpec, Fanout, PubSubKind, Role};
use crate::metrics::Stamp;
use crate::protocol::args::Args;
use crate::protocol::request::{Request, RequestScanner};
use crate::protocol::{reply, write};

/// `CLIENT ID`, asked on a blocking command's connection.
static CLIENT_ID: Bytes = Bytes::from_static(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n");

pub(super) const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

impl RoutedSession {
    pub(super) async fn dispatch(
        &mut self,
        mut request: Request,
        scanner: &mut RequestScanner,
    ) -> Next {
        let ready = self.own.as_ref().and_then(|own| own.warm.as_ref());
        let admission = self
            .front
            .admit(
                &self.ctx,
                ready,
                &mut request,
                self.transaction.is_some(),
                scanner,
            )
            .await;
        let admitted = match admission {
            Admission::Answer { reply, refused } => {
                // Counted by the front.
                self.stamp = None;
                if refused && let Some(t) = self.transaction.as_mut() {
                    t.aborted = true;
                }
                self.local(reply);
                return Next::Continue;
            }
            Admission::Quit => {
                self.stamp = None;
                self.local(write::simple("OK"));
                self.replies.push_ready(Out::Close, None);
                return Next::Stop;
            }
            Admission::Forward(admitted) => admitted,
        };
        self.stamp = Some(Stamp::new(commands::id_of(admitted.spec), self.read_at));
        if let Some(listed) = &self.listed {
            listed
                .client
                .active(&self.cluster.clients, commands::id_of(admitted.spec));
        }
        let Admitted {
            spec,
            role,
            rename,
            watch,
        } = admitted;
        let request = match rename {
            Some(name) => request.renamed(name.as_bytes()),
            None => request,
        };
        if self.own.is_some() {
            return self.dispatch_shared(spec, request, watch).await;
        }
        let lane = self.lane_of(spec, &request);
        if lane != self.lane && !self.replies.is_empty() {
            // Sent now, it could overtake the client's earlier requests on other connections:
            // it waits until they are answered (see `Lane`).
            self.deferred = Some(Deferred {
                spec,
                role,
                request,
                watch,
                stamp: self.stamp,
            });
            return Next::Continue;
        }
        self.lane = lane;
        self.dispatch_cluster(spec, role, request, watch).await
    }

    /// Sends the request that waited for a change of lane, once everything before it has been
    /// answered; `None` while it still waits (or when none does).
    pub(super) async fn resume_deferred(&mut self) -> Option<Next> {
        if !self.replies.is_empty() {
            return None;
        }
        let Deferred {
            spec,
            role,
            request,
            watch,
            stamp,
        } = self.deferred.take()?;
        self.stamp = stamp;
        self.lane = self.lane_of(spec, &request);
        Some(self.dispatch_cluster(spec, role, request, watch).await)
    }

    /// The cluster's routing table, taken again only when the cluster installed a new one.
    pub(super) fn routing(&mut self) -> &crate::cluster::routing::Routing {
        let generation = self.cluster.routing_generation();
        if generation != self.routing_generation {
            self.routing = self.cluster.routing();
            self.routing_generation = generation;
        }
        &self.routing
    }

    /// The connections a cluster request goes over: a script's own connection to its node, or
    /// the others.
    fn lane_of(&mut self, spec: Option<&CommandSpec>, request: &Request) -> Lane {
        if !spec.is_some_and(|s| s.runs_script) || self.transaction.is_some() {
            return Lane::Shared;
        }
        let target = match self.routing().route(spec, request.args()) {
            Route::Slot(slot) => Target::Slot(slot),
            _ => Target::Any,
        };
        owner_or_any(&self.cluster, &target).map_or(Lane::Shared, Lane::Script)
    }

    /// One standalone Redis: stateless requests go over the shared connection; anything that
    /// needs state of its own on the connection moves the client to a private one for good.
    async fn dispatch_shared(
        &mut self,
        spec: Option<&CommandSpec>,
        request: Request,
        watch: Option<Box<ReplyWatch>>,
    ) -> Next {
        if !CommandSpec::shares_connection(spec) {
            let addr = self.cluster.primaries().into_iter().next();
            return self.handoff(addr, request.into_raw());
        }
        // `resp3` is false here: HELLO moved the client to a connection of its own.
        self.forward(Target::Any, request.into_raw(), watch).await;
        Next::Continue
    }

    async fn dispatch_cluster(
        &mut self,
        spec: Option<&CommandSpec>,
        role: Role,
        request: Request,
        watch: Option<Box<ReplyWatch>>,
    ) -> Next {
        match role {
            // A client here is subscribed to nothing (subscribing moves it to a connection of
            // its own): keyward answers as Redis would, and the client stays routed instead of
            // being tied to one node for good.
            Role::Unsubscribe(kind) if self.transaction.is_none() => {
                self.local(unsubscribed_from_nothing(kind, request.args(), self.resp3));
                return Next::Continue;
            }
            Role::Subscribe(kind) if self.transaction.is_none() => {
                let addr = if kind == PubSubKind::Shard && request.args().len() > 1 {
                    match slot_of_keys(request.args().from(1)) {
                        Ok(slot) => self.cluster.map().owner(slot).map(|a| a.to_string()),
                        Err(e) => {
                            self.local(e);
                            return Next::Continue;
                        }
                    }
                } else {
                    self.cluster.primaries().into_iter().next()
                };
                return self.handoff(addr, request.into_raw());
            }
            Role::Monitor if self.transaction.is_none() => {
                let addr = self.cluster.primaries().into_iter().next();
                return self.handoff(addr, request.into_raw());
            }
            Role::Multi => return self.multi(request.raw().clone()).await,
            Role::Exec | Role::Discard => {
                return self.end_transaction(role, &request, watch).await;
            }
            _ => {}
        }
        if self.connection_command(role, &request).await {
            return Next::Continue;
        }
        if self.transaction.is_some() {
            self.queue_in_transaction(spec, request, watch).await;
            return Next::Continue;
        }
        let fanout = spec.map_or(Fanout::Keyless, |s| s.fanout);
        // keyward's own classes first; then what the cluster's command table says.
        let route = match fanout {
            Fanout::Keyless | Fanout::SingleSlot => self.routing().route(spec, request.args()),
            _ => Route::Any,
        };
        match route {
            Route::Fan(fan) => {
                self.fan(fan, request).await;
                return Next::Continue;
            }
            Route::AskKeys => {
                self.ask_keys(request);
                return Next::Continue;
            }
            Route::CrossSlot => {
                self.local(write::error(CROSSSLOT));
                return Next::Continue;
            }
            _ => {}
        }
        if spec.is_some_and(|s| s.runs_script) {
            self.script(route, request, watch).await;
            return Next::Continue;
        }
        // Blocking commands, and connection state no case above handles (SCRIPT DEBUG, ACL,
        // DEBUG): a private connection for this one request, never a shared one.
        if spec.is_some_and(|s| s.blocking || s.stateful) {
            self.blocking(spec, request, watch).await;
            return Next::Continue;
        }

        match fanout {
            Fanout::SplitSum if request.args().len() > 1 => {
                self.split_sum(request, watch).await;
            }
            Fanout::SplitMerge if request.args().len() > 1 => {
                let plan = fanout::plan_split(b"MGET", request.args().from(1), Fanout::SplitMerge);
                let keys = request.args().len() - 1;
                self.run_plan(plan, None, move |groups, replies| {
                    fanout::merge_mget(groups, replies, keys)
                })
                .await;
            }
            Fanout::SplitPairs if request.args().len() >= 3 && request.args().len() % 2 == 1 => {
                let plan = fanout::plan_mset(request.args().from(1));
                let hooks = watch.and_then(|mut w| w.take_hooks());
                self.run_plan(plan, hooks, |_, replies| fanout::all_ok(replies))
                    .await;
            }
            Fanout::AllPrimaries(combine) => self.all_primaries(&request, combine).await,
            Fanout::Scan => self.scan(&request).await,
            _ => match route {
                Route::Slot(slot) => {
                    self.forward(Target::Slot(slot), request.into_raw(), watch)
                        .await
                }
                _ => self.forward(Target::Any, request.into_raw(), watch).await,
            },
        }
        Next::Continue
    }

    /// Commands about the client connection itself, which keyward answers in a cluster without
    /// sharing a connection's state: SELECT, CLIENT SETNAME/GETNAME/REPLY, AUTH, HELLO, WATCH,
    /// UNWATCH, READONLY... Returns false for a request that is none of them.
    async fn connection_command(&mut self, role: Role, request: &Request) -> bool {
        let args = request.args();
        match role {
            Role::Select if args.len() == 2 => {
                if &args[1][..] == b"0" {
                    self.local(write::simple("OK"));
                } else {
                    self.local(write::error("ERR SELECT is not allowed in cluster mode"));
                }
            }
            Role::Client => match commands::client_subcommand(args) {
                ClientSubcommand::SetName => {
                    if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                        self.local(write::error(
                            "ERR Client names cannot contain spaces, newlines or special characters.",
                        ));
                    } else {
                        self.name = (!args[2].is_empty()).then(|| args.bytes(2));
                        if let Some(listed) = &self.listed {
                            listed.client.set_name(self.name.clone());
                        }
                        self.local(write::simple("OK"));
                    }
                }
                ClientSubcommand::GetName => {
                    let reply = match &self.name {
                        Some(n) => write::bulk(n),
                        None if self.resp3 => Bytes::from_static(b"_\r\n"),
                        None => Bytes::from_static(b"$-1\r\n"),
                    };
                    self.local(reply);
                }
                ClientSubcommand::Reply => match commands::reply_switch(&args[2]) {
                    // Keyward answers for Redis here: only ON is answered.
                    Some(switch) => {
                        if self.front.reply_mode.switch(switch) {
                            self.local(write::simple("OK"));
                        }
                    }
                    None => self.local(write::error("ERR syntax error")),
                },
                ClientSubcommand::Tracking | ClientSubcommand::Caching => self.local(write::error(
                    "ERR keyward: client-side caching is not supported in cluster mode",
                )),
                ClientSubcommand::Id => self.local(write::int(self.id as i64)),
                ClientSubcommand::List => match client_list_filter(args) {
                    Ok(only) => {
                        let asking = (self.id, "client|list", request.raw().len());
                        let list = self.cluster.clients.list(only.as_deref(), asking);
                        self.local(verbatim(&list, self.resp3));
                    }
                    Err(e) => self.local(e),
                },
                ClientSubcommand::Info => {
                    let line = self
                        .cluster
                        .clients
                        .info(self.id, "client|info", request.raw().len())
                        .unwrap_or_default();
                    self.local(verbatim(&line, self.resp3));
                }
                ClientSubcommand::Unblock => self.unblock(request),
                ClientSubcommand::Other => return false,
            },
            Role::Auth | Role::Hello => {
                // Checked on a private connection so that the shared ones keep keyward's login.
                if role == Role::Hello
                    && let Some(v) = args.get(1)
                {
                    match v {
                        b"2" => self.resp3 = false,
                        b"3" => self.resp3 = true,
                        _ => {}
                    }
                    // Opened in the protocol spoken until now.
                    self.scripts.clear();
                    if let Some(listed) = &self.listed {
                        listed.client.set_resp(if self.resp3 { 3 } else { 2 });
                    }
                }
                let cluster = self.cluster.clone();
                let raw = request.raw().clone();
                self.push(async move {
                    let Some(addr) = cluster.primaries().into_iter().next() else {
                        return write::error("CLUSTERDOWN keyward: no primary known");
                    };
                    match cluster.private(&addr, false).await {
                        Ok(conn) => conn.request(raw, 0).await.unwrap_or_else(|e| {
                            write::error(&format!("ERR keyward: {}", e.message()))
                        }),
                        Err(e) => write::error(&format!("ERR keyward: {e}")),
                    }
                });
            }
            Role::ClusterFlag => self.local(write::simple("OK")),
            Role::Watch if args.len() >= 2 => self.watch(request).await,
            Role::Unwatch => self.unwatch(request).await,
            _ => return false,
        }
        true
    }

    /// Moves the client to a connection of its own to `addr`, starting with `raw`.
    pub(super) fn handoff(&mut self, addr: Option<String>, raw: Bytes) -> Next {
        match addr {
            Some(addr) => Next::Handoff { addr, raw },
            None => {
                self.local(write::error("CLUSTERDOWN keyward: no node serves the slot"));
                Next::Continue
            }
        }
    }

    async fn split_sum(&mut self, request: Request, mut watch: Option<Box<ReplyWatch>>) {
        let plan = fanout::plan_split(&request.args()[0], request.args().from(1), Fanout::SplitSum);
        let keys = request.args().len() - 1;
        let hooks = watch.as_mut().and_then(|w| w.take_hooks());
        self.run_plan(plan, hooks, move |groups, replies| {
            let sum = fanout::sum(groups, replies);
            if sum.failures.is_empty() {
                if let Some(watch) = &watch {
                    watch.removed(sum.total);
                    watch.outcome(&format!(
                        "removed {} (in {} slots)",
                        sum.total,
                        groups.len()
                    ));
                }
                return write::int(sum.total);
            }
            let failed_keys: usize = sum.failures.iter().map(|f| f.1).sum();
            let (slot, _, first) = &sum.failures[0];
            match &watch {
                Some(watch) => {
                    let message = format!(
                        "partial delete: removed {} keys; {failed_keys} of {keys} keys in {} \
                         slot(s) failed, first failure (slot {slot}): {first}",
                        sum.total,
                        sum.failures.len(),
                    );
                    watch.outcome(&message);
                    write::error(&format!("ERR keyward: {message}"))
                }
                None => write::error(first),
            }
        })
        .await;
    }

    /// Submits every part of a plan now, and queues the combination of their replies (after
    /// the `hooks` the combined reply calls for have run).
    async fn run_plan<F>(&mut self, plan: Plan, hooks: Option<Box<HookRuns>>, combine: F)
    where
        F: FnOnce(&[(u16, Vec<usize>)], &[Bytes]) -> Bytes + Send + 'static,
    {
        let cluster = self.cluster.clone();
        let submitted = fanout::submit_all(&cluster, plan.parts, self.resp3).await;
        for s in &submitted {
            self.note(s);
        }
        let groups = plan.groups;
        let by_key = plan.by_key;
        let resp3 = self.resp3;
        self.push(async move {
            let mut replies = fanout::replies(&cluster, submitted).await;
            if let Some(by_key) = &by_key {
                fanout::split_tryagain(&cluster, &groups, by_key, &mut replies, resp3).await;
            }
            let frame = combine(&groups, &replies);
            if let Some(run) = hooks.and_then(|h| h.due(&frame)) {
                run.await;
            }
            frame
        });
    }

    /// SCAN: one primary after the other, keyward's cursor naming the node.
    async fn scan(&mut self, request: &Request) {
        let cluster = self.cluster.clone();
        let primaries = cluster.primaries();
        match fanout::plan_scan(&primaries, request.args()) {
            Ok(step) => {
                let count = primaries.len();
                let submitted = cluster.submit(step.target, step.request, self.resp3).await;
                self.note(&submitted);
                let node = step.node;
                self.push(async move {
                    let frame = submitted.reply(&cluster).await;
                    fanout::finish_scan(&frame, node, count)
                });
            }
            Err(e) => self.local(e),
        }
    }

    /// The request on every primary, the replies combined into one.
    async fn all_primaries(&mut self, request: &Request, combine: Combine) {
        let parts = fanout::plan_every_primary(&self.cluster.primaries(), request.raw());
        let plan = Plan {
            groups: Vec::new(),
            parts,
            by_key: None,
        };
        match combine {
            Combine::Sum => {
                self.run_plan(plan, None, |_, r| fanout::sum_integers(r))
                    .await
            }
            Combine::Concat => {
                self.run_plan(plan, None, |_, r| fanout::concat_arrays(r))
                    .await
            }
            Combine::AllOk => self.run_plan(plan, None, |_, r| fanout::all_ok(r)).await,
        }
    }

    /// A command the cluster's tips (or keyward's choices) send to several nodes: all at once,
    /// the replies combined into one.
    async fn fan(&mut self, fan: Fan, request: Request) {
        let cluster = self.cluster.clone();
        let args = request.args();
        if args.len() > 1
            && args[0].eq_ignore_ascii_case(b"script")
            && args[1].eq_ignore_ascii_case(b"flush")
        {
            cluster.forget_shared_scripts();
        }
        let resp3 = self.resp3;
        let args: Vec<Bytes> = (0..request.args().len())
            .map(|i| request.args().bytes(i))
            .collect();
        let raw = request.into_raw();
        self.routing();
        let routing = self.routing.clone();
        self.push(async move {
            let (nodes, replies) = cluster.fan_out(fan, raw, resp3).await;
            let counted_once = |name: &str| routing.reaches_every_primary(name);
            let frame = merge::combine(fan.merge, &nodes, &replies, &args, &counted_once);
            if matches!(fan.merge, Merge::SlowlogGet | Merge::SlowlogLen) {
                // One slow log holds `slowlog-max-len` entries (set on every node alike).
                let asked = write::command(b"CONFIG", &[&b"GET"[..], b"slowlog-max-len"]);
                let config = cluster.execute(Target::Any, asked, false).await;
                let max_len = reply::elements(&config)
                    .and_then(|kv| {
                        kv.get(1)
                            .and_then(|v| reply::bulk_string(v).map(<[u8]>::to_vec))
                    })
                    .and_then(|v| String::from_utf8(v).ok()?.parse::<usize>().ok());
                if let Some(max_len) = max_len {
                    return merge::cap_slowlog(fan.merge, frame, max_len);
                }
            }
            frame
        });
    }

    /// A command whose keys the cluster's specifications cannot locate (a module command with
    /// `unknown` key specs): a node says where its keys are (`COMMAND GETKEYS`), then it goes
    /// to their owner. Sent after the session's earlier requests were queued, so later
    /// requests of the same client may reach their nodes first; its reply keeps its place.
    fn ask_keys(&mut self, request: Request) {
        let cluster = self.cluster.clone();
        let resp3 = self.resp3;
        let mut ask = Vec::with_capacity(request.args().len() + 1);
        ask.push(Bytes::from_static(b"GETKEYS"));
        ask.extend((0..request.args().len()).map(|i| request.args().bytes(i)));
        let getkeys = write::command(b"COMMAND", &ask);
        let raw = request.into_raw();
        self.push(async move {
            let keys = cluster.execute(Target::Any, getkeys, false).await;
            let target = match reply::elements(&keys) {
                Some(keys) if !keys.is_empty() => {
                    let slots: Vec<u16> = keys
                        .iter()
                        .filter_map(|k| reply::bulk_string(k).map(slot_of))
                        .collect();
                    if slots.iter().any(|&s| s != slots[0]) {
                        return write::error(CROSSSLOT);
                    }
                    slots.first().map_or(Target::Any, |&s| Target::Slot(s))
                }
                // No keys, or the node could not tell (an error): any node answers.
                _ => Target::Any,
            };
            cluster.execute(target, raw, resp3).await
        });
    }

    /// A script or function call, over the client's own connection to the node of its keys
    /// (kept for the session): a script that runs long holds up this client only, and the
    /// node answers everyone else `BUSY` as Redis does, instead of their requests waiting
    /// behind it on the shared connection. What this read queued on shared connections is
    /// written first, so the client's earlier requests reach their nodes before the script.
    /// A redirection (the slot moved) is followed over the shared connections.
    async fn script(&mut self, route: Route, request: Request, watch: Option<Box<ReplyWatch>>) {
        let target = match route {
            Route::Slot(slot) => Target::Slot(slot),
            _ => Target::Any,
        };
        let Some(addr) = owner_or_any(&self.cluster, &target) else {
            self.local(write::error("CLUSTERDOWN keyward: no node serves the slot"));
            return;
        };
        self.flush();
        let conn = match self
            .scripts
            .iter()
            .find(|(a, c)| *a == addr && c.is_alive())
        {
            Some((_, conn)) => conn.clone(),
            None => match self.cluster.private(&addr, self.resp3).await {
                Ok(conn) => {
                    self.scripts.retain(|(a, _)| *a != addr);
                    self.scripts.push((addr.clone(), conn.clone()));
                    conn
                }
                Err(e) => {
                    self.local(write::error(&format!("ERR keyward: {e}")));
                    return;
                }
            },
        };
        // An EVAL's script, to cache on every primary as one Redis caches it for any key.
        let args = request.args();
        let body = (args.len() > 1
            && (args[0].eq_ignore_ascii_case(b"eval") || args[0].eq_ignore_ascii_case(b"eval_ro")))
        .then(|| args.bytes(1));
        let raw = request.into_raw();
        let pending = conn.submit(raw.clone(), 0).await;
        let cluster = self.cluster.clone();
        let resp3 = self.resp3;
        self.push(async move {
            let reply = match pending {
                Ok(pending) => pending.reply().await,
                Err(e) => Err(e),
            };
            let frame = match reply {
                Ok(frame) if frame.starts_with(b"-MOVED ") || frame.starts_with(b"-ASK ") => {
                    cluster.execute(target, raw, resp3).await
                }
                Ok(frame) => {
                    if let Some(body) = body {
                        cluster.share_script(&body, &addr).await;
                    }
                    frame
                }
                Err(e) => write::error(&format!("ERR keyward: {}", e.message())),
            };
            if let Some(watch) = watch {
                watch.settle(&frame).await;
            }
            frame
        });
    }

    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]` of a keyward client id: sent, with the node's own
    /// id of the connection, to the node where that client's blocking command waits; `0` when
    /// it waits for none, as Redis answers. An id that is not a number gets the node's error.
    fn unblock(&mut self, request: &Request) {
        let args = request.args();
        let id = std::str::from_utf8(&args[2])
            .ok()
            .and_then(|id| id.parse::<u64>().ok());
        let cluster = self.cluster.clone();
        let raw = request.raw().clone();
        let resp3 = self.resp3;
        let mode = (args.len() == 4).then(|| args.bytes(3));
        self.push(async move {
            let Some(id) = id else {
                return cluster.execute(Target::Any, raw, resp3).await;
            };
            match cluster.clients.waiting(id) {
                Some((addr, node_id)) => {
                    let node_id = node_id.to_string();
                    let mut unblock: Vec<&[u8]> = vec![b"UNBLOCK", node_id.as_bytes()];
                    if let Some(mode) = &mode {
                        unblock.push(mode);
                    }
                    let command = write::command(b"CLIENT", &unblock);
                    cluster.execute(Target::Node(addr), command, resp3).await
                }
                // Not blocked: checked by a node (a bad TIMEOUT|ERROR word gets its error), as
                // an id no connection has.
                None => {
                    let mut check: Vec<&[u8]> = vec![b"UNBLOCK", b"0"];
                    if let Some(mode) = &mode {
                        check.push(mode);
                    }
                    cluster
                        .execute(Target::Any, write::command(b"CLIENT", &check), resp3)
                        .await
                }
            }
        });
    }

    /// A blocking command on a private connection of its own, closed after the reply.
    async fn blocking(
        &mut self,
        spec: Option<&CommandSpec>,
        request: Request,
        watch: Option<Box<ReplyWatch>>,
    ) {
        let target = match target(&self.cluster, spec, request.args()) {
            Ok(t) => t,
            Err(e) => {
                self.local(e);
                return;
            }
        };
        let cluster = self.cluster.clone();
        let resp3 = self.resp3;
        let blocking = self.blocking.clone();
        let client_id = self.id;
        blocking.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let done = BlockingDone(blocking);
        self.push(async move {
            let _done = done;
            let addr = owner_or_any(&cluster, &target);
            let Some(addr) = addr else {
                return write::error("CLUSTERDOWN keyward: no node serves the slot");
            };
            let frame = match cluster.private(&addr, resp3).await {
                Ok(conn) => {
                    // The node's id of this connection, asked in the same write as the
                    // command: what `CLIENT UNBLOCK` of this client reaches.
                    let asked = conn.enqueue(CLIENT_ID.clone(), 0).await;
                    let sent = conn.submit(request.into_raw(), 0).await;
                    let node_id = match asked {
                        Ok(pending) => pending.reply().await.ok().and_then(|f| reply::integer(&f)),
                        Err(_) => None,
                    };
                    let _blocked =
                        node_id.map(|node_id| cluster.clients.blocked(client_id, addr, node_id));
                    match sent {
                        Ok(pending) => pending.reply().await,
                        Err(e) => Err(e),
                    }
                    .unwrap_or_else(|e| write::error(&format!("ERR keyward: {}", e.message())))
                }
                Err(e) => write::error(&format!("ERR keyward: {e}")),
            };
            if let Some(watch) = watch {
                watch.settle(&frame).await;
            }
            frame
        });
    }
}

/// `CLIENT LIST`'s filter: `None` for every client, `Some(ids)` for `ID id ...`; `TYPE normal`
/// is every client too, any other type none (keyward's clients are all normal ones).
fn client_list_filter(args: Args<'_>) -> Result<Option<Vec<u64>>, Bytes> {
    let syntax = || write::error("ERR syntax error");
    match args.get(2) {
        None => Ok(None),
        Some(kw) if kw.eq_ignore_ascii_case(b"type") && args.len() == 4 => {
            match args[3].to_ascii_lowercase().as_slice() {
                b"normal" => Ok(None),
                b"master" | b"replica" | b"slave" | b"pubsub" => Ok(Some(Vec::new())),
                _ => Err(write::error(&format!(
                    "ERR Unknown client type '{}'",
                    String::from_utf8_lossy(&args[3])
                ))),
            }
        }
        Some(kw) if kw.eq_ignore_ascii_case(b"id") && args.len() >= 4 => args
            .from(3)
            .iter()
            .map(|id| {
                std::str::from_utf8(id)
                    .ok()
                    .and_then(|id| id.parse::<u64>().ok())
                    .filter(|&id| id > 0)
                    .ok_or_else(|| write::error("ERR Invalid client ID"))
            })
            .collect::<Result<Vec<u64>, Bytes>>()
            .map(Some),
        _ => Err(syntax()),
    }
}

/// Text as Redis sends `CLIENT LIST`: a bulk string, or a verbatim string in RESP3.
fn verbatim(text: &str, resp3: bool) -> Bytes {
    if !resp3 {
        return write::bulk(text.as_bytes());
    }
    Bytes::from(format!("={}\r\ntxt:{text}\r\n", text.len() + 4))
}

/// The confirmations Redis sends a client subscribed to nothing for `UNSUBSCRIBE` and friends:
/// one per channel named, with the count 0, or one with a null channel when none is named.
/// Pushes in RESP3.
fn unsubscribed_from_nothing(kind: PubSubKind, args: Args<'_>, resp3: bool) -> Bytes {
    let header: &[u8] = if resp3 { b">3\r\n" } else { b"*3\r\n" };
    let mut out = bytes::BytesMut::new();
    let mut confirm = |channel: Option<&[u8]>| {
        out.extend_from_slice(header);
        out.extend_from_slice(&write::bulk(kind.unsubscribe_reply()));
        match channel {
            Some(c) => out.extend_from_slice(&write::bulk(c)),
            None if resp3 => out.extend_from_slice(b"_\r\n"),
            None => out.extend_from_slice(b"$-1\r\n"),
        }
        out.extend_from_slice(b":0\r\n");
    };
    if args.len() <= 1 {
        confirm(None);
    } else {
        for channel in args.from(1).iter() {
            confirm(Some(channel));
        }
    }
    out.freeze()
}

/// The node that owns `target`'s slot, or the first primary for anything else.
fn owner_or_any(cluster: &Cluster, target: &Target) -> Option<String> {
    match target {
        Target::Slot(s) => cluster.map().owner(*s).map(|a| a.to_string()),
        _ => cluster.primaries().into_iter().next(),
    }
}

/// Where a single-slot or keyless request goes: CROSSSLOT when its keys span slots. A
/// command the tips fan out goes to one node here (inside a transaction, or on a private
/// connection), as does one whose keys only a node can tell (MOVED is followed).
pub(super) fn target(
    cluster: &Cluster,
    spec: Option<&CommandSpec>,
    args: Args<'_>,
) -> Result<Target, Bytes> {
    match cluster.routing().route(spec, args) {
        Route::Slot(slot) => Ok(Target::Slot(slot)),
        Route::CrossSlot => Err(write::error(CROSSSLOT)),
        Route::Any | Route::Fan(_) | Route::AskKeys => Ok(Target::Any),
    }
}

/// The one slot all of `keys` hash to, or CROSSSLOT.
pub(super) fn slot_of_keys(keys: Args<'_>) -> Result<u16, Bytes> {
    let first = slot_of(&keys[0]);
    if keys.iter().any(|k| slot_of(k) != first) {
        return Err(write::error(CROSSSLOT));
    }
    Ok(first)
}

/// Counts a blocking command out of the session's count when its future ends (or is dropped).
struct BlockingDone(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for BlockingDone {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
