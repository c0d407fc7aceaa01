//! The one client type. It finds the leader, retries `NotLeader` / `Unavailable` with backoff
//! under a deadline, and can be pinned to one node (requests enter the cluster through it and
//! `Stale` reads are answered by its replica).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::transport::Transport;
use crate::types::{
    ClientRequest, ClientResponse, Command, CommandResult, GroupId, NodeId, ReadConsistency,
    SessionRef,
};

/// The group every key lives in until sharding arrives.
pub const DEFAULT_GROUP: GroupId = 0;

#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Deadline of one operation, retries included.
    pub timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Checked before sending, so over-limit input fails fast (nodes check again).
    pub limits: Limits,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(200),
            limits: Limits::default(),
        }
    }
}

/// Outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    pub success: bool,
    /// The value after the operation (the new value on success, the unchanged one otherwise).
    pub current: Option<Vec<u8>>,
}

/// This client's session with one group: writes are numbered so the group applies each once.
struct GroupSession {
    id: u64,
    next_seq: u64,
    in_flight: BTreeSet<u64>,
}

struct Shared {
    transport: Arc<dyn Transport>,
    options: ClientOptions,
    leader_hints: Mutex<HashMap<GroupId, NodeId>>,
    sessions: tokio::sync::Mutex<HashMap<GroupId, GroupSession>>,
    closed: AtomicBool,
    rotate: AtomicUsize,
}

/// A handle to a cluster. Cheap to clone; clones share leader hints and the closed flag.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    pinned: Option<NodeId>,
}

impl Client {
    pub fn new(transport: Arc<dyn Transport>, options: ClientOptions) -> Self {
        Client {
            shared: Arc::new(Shared {
                transport,
                options,
                leader_hints: Mutex::new(HashMap::new()),
                sessions: tokio::sync::Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                rotate: AtomicUsize::new(0),
            }),
            pinned: None,
        }
    }

    /// A client whose requests all enter the cluster through `node`.
    pub fn pinned_to(&self, node: NodeId) -> Result<Client> {
        if !self.shared.transport.nodes().contains(&node) {
            return Err(Error::UnknownNode(node));
        }
        Ok(Client {
            shared: self.shared.clone(),
            pinned: Some(node),
        })
    }

    pub fn pinned_node(&self) -> Option<NodeId> {
        self.pinned
    }

    /// Closes the client (and its clones): later calls fail with `Closed`.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.write(Command::Put {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        })
        .await
        .map(|_| ())
    }

    /// Linearizable read.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        consistency: ReadConsistency,
    ) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        self.shared.options.limits.check_key(key)?;
        let request = ClientRequest::Read {
            group: DEFAULT_GROUP,
            key: key.to_vec(),
            consistency,
        };
        match self.execute(request).await? {
            ClientResponse::Read(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        match self
            .write(Command::Delete {
                key: key.as_ref().to_vec(),
            })
            .await?
        {
            CommandResult::Delete { existed } => Ok(existed),
            other => Err(unexpected_result(other)),
        }
    }

    /// Appends `value` to the key's value (absent = empty); returns the new length.
    pub async fn append(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64> {
        let cmd = Command::Append {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        };
        match self.write(cmd).await? {
            CommandResult::Append { new_len } => Ok(new_len),
            other => Err(unexpected_result(other)),
        }
    }

    /// Sets `key` to `new` if its value equals `expected` (`None` = absent).
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: impl AsRef<[u8]>,
    ) -> Result<CasOutcome> {
        let cmd = Command::Cas {
            key: key.as_ref().to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.as_ref().to_vec(),
        };
        match self.write(cmd).await? {
            CommandResult::Cas { success, current } => Ok(CasOutcome { success, current }),
            other => Err(unexpected_result(other)),
        }
    }

    /// Writes exactly once: the write carries this client's session and a sequence number, and
    /// every retry reuses them, so the group applies it once and answers retries with the first
    /// result.
    async fn write(&self, command: Command) -> Result<CommandResult> {
        self.shared.options.limits.check_command(&command)?;
        let group = DEFAULT_GROUP;
        loop {
            let session = self.begin_write(group).await?;
            let request = ClientRequest::Write {
                group,
                command: command.clone(),
                session: Some(session),
            };
            let (outcome, attempts) = self.execute_counted(request).await;
            self.end_write(group, session).await;
            match outcome {
                // Refused on its only attempt, so it was never applied: safe to send again
                // under a new session. After a retry, it may have been applied: report it.
                Err(Error::SessionExpired { .. }) if attempts == 1 => {
                    self.forget_session(group, session.session).await;
                }
                Err(e) => return Err(e),
                Ok(ClientResponse::Write(r)) => return Ok(r),
                Ok(other) => return Err(unexpected(other)),
            }
        }
    }

    /// Allocates the next sequence number of this client's session with `group`, opening the
    /// session first if there is none.
    async fn begin_write(&self, group: GroupId) -> Result<SessionRef> {
        let mut sessions = self.shared.sessions.lock().await;
        let s = match sessions.entry(group) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let id = match self.execute(ClientRequest::OpenSession { group }).await? {
                    ClientResponse::Write(CommandResult::SessionOpened { session }) => session,
                    other => return Err(unexpected(other)),
                };
                e.insert(GroupSession {
                    id,
                    next_seq: 1,
                    in_flight: BTreeSet::new(),
                })
            }
        };
        let seq = s.next_seq;
        s.next_seq += 1;
        s.in_flight.insert(seq);
        let first_unacked = s.in_flight.first().copied().unwrap_or(seq);
        Ok(SessionRef {
            session: s.id,
            seq,
            first_unacked,
        })
    }

    async fn end_write(&self, group: GroupId, r: SessionRef) {
        if let Some(s) = self.shared.sessions.lock().await.get_mut(&group) {
            if s.id == r.session {
                s.in_flight.remove(&r.seq);
            }
        }
    }

    async fn forget_session(&self, group: GroupId, session: u64) {
        let mut sessions = self.shared.sessions.lock().await;
        if sessions.get(&group).is_some_and(|s| s.id == session) {
            sessions.remove(&group);
        }
    }

    /// The session id this client uses with `group`, if one is open.
    pub async fn session_id(&self, group: GroupId) -> Option<u64> {
        self.shared.sessions.lock().await.get(&group).map(|s| s.id)
    }

    /// Sends `request` until it succeeds, fails for good, or the deadline passes.
    async fn execute(&self, request: ClientRequest) -> Result<ClientResponse> {
        self.execute_counted(request).await.0
    }

    /// [`execute`](Self::execute), also returning how many times the request was sent.
    async fn execute_counted(&self, request: ClientRequest) -> (Result<ClientResponse>, u32) {
        let mut attempts = 0;
        let result = self.execute_inner(request, &mut attempts).await;
        (result, attempts)
    }

    async fn execute_inner(
        &self,
        request: ClientRequest,
        attempts: &mut u32,
    ) -> Result<ClientResponse> {
        if self.is_closed() {
            return Err(Error::Closed("client is closed".into()));
        }
        let opts = self.shared.options;
        let started = Instant::now();
        let deadline = started + opts.timeout;
        let group = request.group();
        let mut backoff = opts.backoff_initial;
        let mut last_err = None;
        loop {
            let target = self.target(group)?;
            *attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let call = self
                .shared
                .transport
                .call(target, request.clone(), self.pinned.is_some());
            let outcome = match tokio::time::timeout(remaining, call).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("request to node {target} (last error: {last_err:?})"),
                        waited_ms: started.elapsed().as_millis() as u64,
                    })
                }
            };
            match outcome {
                Ok(resp) => {
                    if self.pinned.is_none() {
                        self.set_hint(group, Some(target));
                    }
                    return Ok(resp);
                }
                Err(Error::NotLeader { leader, .. }) if self.pinned.is_none() => {
                    let immediate = leader.is_some() && leader != Some(target);
                    self.set_hint(group, leader);
                    if leader.is_none() {
                        self.shared.rotate.fetch_add(1, Ordering::Relaxed);
                    }
                    last_err = Some(Error::NotLeader {
                        group,
                        node: target,
                        leader,
                    });
                    if immediate {
                        continue;
                    }
                }
                Err(e) if e.is_retryable() => {
                    if self.pinned.is_none() {
                        self.set_hint(group, None);
                        self.shared.rotate.fetch_add(1, Ordering::Relaxed);
                    }
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
            if Instant::now() + backoff >= deadline {
                return Err(Error::Timeout {
                    what: format!("retrying (last error: {last_err:?})"),
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(opts.backoff_max);
        }
    }

    fn target(&self, group: GroupId) -> Result<NodeId> {
        if let Some(n) = self.pinned {
            return Ok(n);
        }
        if let Some(n) = self
            .shared
            .leader_hints
            .lock()
            .ok()
            .and_then(|h| h.get(&group).copied())
        {
            return Ok(n);
        }
        let nodes = self.shared.transport.nodes();
        if nodes.is_empty() {
            return Err(Error::Unavailable("no nodes known".into()));
        }
        Ok(nodes[self.shared.rotate.load(Ordering::Relaxed) % nodes.len()])
    }

    fn set_hint(&self, group: GroupId, leader: Option<NodeId>) {
        if let Ok(mut h) = self.shared.leader_hints.lock() {
            match leader {
                Some(l) => h.insert(group, l),
                None => h.remove(&group),
            };
        }
    }
}

fn unexpected(resp: ClientResponse) -> Error {
    Error::Unavailable(format!("unexpected response {resp:?}"))
}

fn unexpected_result(r: CommandResult) -> Error {
    Error::Unavailable(format!("unexpected result {r:?}"))
}
