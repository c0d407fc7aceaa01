//! Node-to-node traffic over gRPC. Each node keeps one long-lived bidirectional stream per peer
//! for Raft, admin and forwarded client messages of every group (the way TiKV's BatchRaft
//! does): requests waiting to go are sent together in one frame batch, and replies come back
//! on the response stream in any order, paired by id. Snapshot chunks go on a second stream per
//! peer, rate-limited, so a snapshot cannot starve heartbeats. The receiving side is the
//! `Internal` service, which also serves the Rust client's routed calls.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::Stream;
use scalestore::network::{AdminRequest, PeerRequest, PeerResponse, PeerTransport, RaftRpc};
use scalestore::protocol::{ClientRequest, ClientResponse};
use scalestore::{Error, NodeId, Result};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::ClientTlsConfig;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::internal_client::InternalClient;
use crate::proto::internal_server::Internal;
use crate::proto::{ClientCall, ClientReply, Frame, Frames};
use crate::serve::NodeHandle;
pub(crate) use crate::wire::set_header;
pub use crate::wire::{
    channel, channel_with, decode, encode, CLUSTER_HEADER, NODE_HEADER, PROTOCOL, PROTOCOL_HEADER,
};

/// Frames sent together at most.
const BATCH: usize = 256;
/// Payload bytes sent together at most (a batch always takes its first frame, whatever its size):
/// a catch-up append of large entries leaves the rest of the queue for the next batch.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Each lane is a stream (and connection) of its own to a peer, so what is small and urgent
/// never waits behind what is big.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    /// Votes, pre-votes, leader transfers and heartbeats (appends without entries): what keeps
    /// every group's leadership, never behind another group's bulk appends.
    Control,
    /// Appends with entries, admin requests, forwarded client requests.
    Messages,
    /// Snapshot chunks.
    Snapshots,
}

impl Lane {
    fn of(request: &PeerRequest) -> Lane {
        match request {
            PeerRequest::Raft { rpc, .. } => match rpc {
                RaftRpc::Vote(_) | RaftRpc::PreVote(_) | RaftRpc::TransferLeader(_) => {
                    Lane::Control
                }
                RaftRpc::Append(a) if a.entries.is_empty() => Lane::Control,
                RaftRpc::Append(_) => Lane::Messages,
                RaftRpc::SnapshotChunk { .. } => Lane::Snapshots,
            },
            // The liveness exchange stands in for the heartbeats of sleeping groups.
            PeerRequest::Admin(AdminRequest::Liveness { .. }) => Lane::Control,
            PeerRequest::Client(_) | PeerRequest::Admin(_) => Lane::Messages,
        }
    }
}

struct Outgoing {
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<PeerResponse>>,
    id: u64,
    to: NodeId,
    timeout: Duration,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<PeerResponse>>>>>;

/// A token bucket shared by every snapshot stream of a node.
struct RateLimit {
    bytes_per_second: u64,
    state: tokio::sync::Mutex<(Instant, f64)>,
}

impl RateLimit {
    async fn take(&self, bytes: usize) {
        if self.bytes_per_second == 0 {
            return;
        }
        let rate = self.bytes_per_second as f64;
        let mut state = self.state.lock().await;
        let (last, tokens) = *state;
        let now = Instant::now();
        // At most one second of burst.
        let available = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
        let after = available - bytes as f64;
        *state = (now, after);
        if after < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-after / rate)).await;
        }
    }
}

/// The gRPC [`PeerTransport`] of one node.
pub struct GrpcPeers {
    this: std::sync::Weak<GrpcPeers>,
    me: NodeId,
    cluster_id: String,
    addresses: RwLock<HashMap<NodeId, String>>,
    links: Mutex<HashMap<(NodeId, Lane), mpsc::UnboundedSender<Outgoing>>>,
    next_id: AtomicU64,
    snapshots: Arc<RateLimit>,
    /// How this node dials its peers (TLS with its peer certificate), if at all.
    tls: Option<ClientTlsConfig>,
    /// Streams (re)opened, for metrics and tests.
    pub connects: AtomicU64,
}

impl GrpcPeers {
    /// `snapshot_bytes_per_second`: the cap on snapshot traffic this node sends (0: none).
    pub fn new(
        me: NodeId,
        cluster_id: &str,
        addresses: HashMap<NodeId, String>,
        snapshot_bytes_per_second: u64,
        tls: Option<ClientTlsConfig>,
    ) -> Arc<GrpcPeers> {
        Arc::new_cyclic(|this| GrpcPeers {
            this: this.clone(),
            me,
            cluster_id: cluster_id.to_string(),
            addresses: RwLock::new(addresses),
            links: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            snapshots: Arc::new(RateLimit {
                bytes_per_second: snapshot_bytes_per_second,
                state: tokio::sync::Mutex::new((Instant::now(), 0.0)),
            }),
            connects: AtomicU64::new(0),
            tls,
        })
    }

    /// Adds or updates node addresses (from a newer map); a changed address reconnects.
    pub fn learn(&self, addresses: &std::collections::BTreeMap<NodeId, String>) {
        let mut changed = Vec::new();
        if let Ok(mut known) = self.addresses.write() {
            for (id, address) in addresses {
                if known.get(id) != Some(address) {
                    known.insert(*id, address.clone());
                    changed.push(*id);
                }
            }
        }
        if let Ok(mut links) = self.links.lock() {
            links.retain(|(id, _), _| !changed.contains(id));
        }
    }

    pub fn address(&self, id: NodeId) -> Option<String> {
        self.addresses.read().ok().and_then(|a| a.get(&id).cloned())
    }

    fn link(&self, to: NodeId, lane: Lane) -> Result<mpsc::UnboundedSender<Outgoing>> {
        let this = self
            .this
            .upgrade()
            .ok_or_else(|| Error::Unavailable("peer transport dropped".into()))?;
        let mut links = self
            .links
            .lock()
            .map_err(|_| Error::Unavailable("peer links poisoned".into()))?;
        if let Some(tx) = links.get(&(to, lane)).filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let address = self.address(to).ok_or(Error::UnknownNode(to))?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_link(this, to, address, rx));
        links.insert((to, lane), tx.clone());
        Ok(tx)
    }
}

#[async_trait]
impl PeerTransport for GrpcPeers {
    async fn send(
        &self,
        from: NodeId,
        to: NodeId,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse> {
        debug_assert_eq!(from, self.me);
        let lane = Lane::of(&request);
        if let PeerRequest::Raft {
            rpc: RaftRpc::SnapshotChunk { data, .. },
            ..
        } = &request
        {
            self.snapshots.take(data.len()).await;
        }
        let (reply, answer) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outgoing = Outgoing {
            payload: encode(&request),
            reply,
            id,
            to,
            timeout,
        };
        self.link(to, lane)?
            .send(outgoing)
            .map_err(|_| Error::Unavailable(format!("link to node {to} closed")))?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Unavailable(format!("link to node {to} broke"))),
            Err(_) => Err(Error::Unavailable(format!(
                "node {to} did not answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

/// Drives one stream to `to`: opens it when there is something to send, sends what is queued
/// in batches, pairs replies with requests, and fails what was in flight if the stream breaks
/// (the next message opens a new one).
async fn run_link(
    peers: Arc<GrpcPeers>,
    to: NodeId,
    address: String,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut backoff = Duration::from_millis(50);
    while let Some(first) = queue.recv().await {
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (frames_tx, frames_rx) = mpsc::channel::<Frames>(64);
        let mut request = Request::new(ReceiverStream::new(frames_rx));
        set_header(&mut request, CLUSTER_HEADER, &peers.cluster_id);
        set_header(&mut request, NODE_HEADER, &peers.me.to_string());
        set_header(&mut request, PROTOCOL_HEADER, PROTOCOL);
        let mut client = match channel_with(&address, peers.tls.as_ref()) {
            Ok(c) => InternalClient::new(c)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            Err(e) => {
                let _ = first.reply.send(Err(e));
                continue;
            }
        };
        // The first batch goes before the call, so the stream opens with it.
        let batch = frames(
            &pending,
            with_queued(first, &mut queue, |o| o.payload.len()),
        );
        if frames_tx.send(batch).await.is_err() {
            continue;
        }
        peers.connects.fetch_add(1, Ordering::Relaxed);
        let opened = tokio::time::timeout(Duration::from_secs(2), client.peer(request)).await;
        let mut replies = match opened {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                let error = match status.code() {
                    tonic::Code::PermissionDenied | tonic::Code::FailedPrecondition => {
                        Error::InvalidArgument(format!("node {to} refused: {}", status.message()))
                    }
                    _ => Error::Unavailable(format!("node {to}: {}", status.message())),
                };
                fail_all(&pending, &error);
                fail_queued(&mut queue, &error);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(_) => {
                let error = Error::Unavailable(format!("node {to} at {address} did not answer"));
                fail_all(&pending, &error);
                fail_queued(&mut queue, &error);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let reader_pending = pending.clone();
        let mut reader = tokio::spawn(async move {
            while let Ok(Some(batch)) = replies.message().await {
                for frame in batch.frames {
                    let waiter = reader_pending
                        .lock()
                        .ok()
                        .and_then(|mut p| p.remove(&frame.id));
                    if let Some(w) = waiter {
                        let result = decode::<Result<PeerResponse>>(&frame.payload).and_then(|r| r);
                        let _ = w.send(result);
                    }
                }
            }
        });
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut reader => break,
                _ = sweep.tick() => {
                    // Waiters that timed out leave: their replies (if any) have nobody to go to.
                    if let Ok(mut p) = pending.lock() {
                        p.retain(|_, w| !w.is_closed());
                    }
                }
                next = queue.recv() => {
                    let Some(first) = next else {
                        reader.abort();
                        return;
                    };
                    let batch = frames(&pending, with_queued(first, &mut queue, |o| o.payload.len()));
                    if frames_tx.send(batch).await.is_err() {
                        break;
                    }
                }
            }
        }
        reader.abort();
        fail_all(
            &pending,
            &Error::Unavailable(format!("stream to node {to} at {address} broke")),
        );
    }
}

/// `first` and whatever else is queued already, up to a batch of [`BATCH`] frames; no frame is
/// taken once the batch holds [`BATCH_BYTES`] bytes (by `size`): the rest waits, in order, for
/// the next batch.
fn with_queued<T>(
    first: T,
    queue: &mut mpsc::UnboundedReceiver<T>,
    size: impl Fn(&T) -> usize,
) -> Vec<T> {
    let mut bytes = size(&first);
    let mut batch = vec![first];
    while batch.len() < BATCH && bytes < BATCH_BYTES {
        match queue.try_recv() {
            Ok(more) => {
                bytes += size(&more);
                batch.push(more);
            }
            Err(_) => break,
        }
    }
    batch
}

fn frames(pending: &Pending, batch: Vec<Outgoing>) -> Frames {
    let mut frames = Vec::with_capacity(batch.len());
    if let Ok(mut p) = pending.lock() {
        // A request whose sender gave up is not sent at all.
        for o in batch.into_iter().filter(|o| !o.reply.is_closed()) {
            p.insert(o.id, o.reply);
            frames.push(Frame {
                id: o.id,
                payload: o.payload,
                to: o.to,
                timeout_ms: o.timeout.as_millis() as u64,
            });
        }
    }
    Frames { frames }
}

/// Fails what waits in the queue now (the stream could not be opened for it).
fn fail_queued(queue: &mut mpsc::UnboundedReceiver<Outgoing>, error: &Error) {
    while let Ok(o) = queue.try_recv() {
        let _ = o.reply.send(Err(error.clone()));
    }
}

fn fail_all(pending: &Pending, error: &Error) {
    if let Ok(mut p) = pending.lock() {
        for (_, w) in p.drain() {
            let _ = w.send(Err(error.clone()));
        }
    }
}

/// The receiving side: peers' streams and the Rust client's routed calls.
pub struct InternalService {
    pub(crate) node: NodeHandle,
    pub(crate) cluster_id: String,
    /// TLS is on: a peer stream needs a node's certificate (see [`crate::tls`]).
    pub(crate) peer_verifier: Option<Arc<crate::tls::PeerVerifier>>,
    /// Where the KV requests of this door (the project's own clients: the CLI, the Rust client,
    /// both SDKs) are counted, as the public KV service counts its own.
    pub(crate) metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl InternalService {
    fn check_cluster<T>(&self, request: &Request<T>) -> std::result::Result<(), Status> {
        let theirs = request
            .metadata()
            .get(CLUSTER_HEADER)
            .and_then(|v| v.to_str().ok());
        let protocol = request
            .metadata()
            .get(PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok());
        if let Some(p) = protocol.filter(|p| *p != PROTOCOL) {
            return Err(Status::failed_precondition(format!(
                "internal protocol {p} is not this node's ({PROTOCOL}): upgrade one node at a time within a version"
            )));
        }
        match theirs {
            // Clients that do not say (plain tools) are let in; a peer of another cluster is not.
            None => Ok(()),
            Some(c) if c == self.cluster_id => Ok(()),
            Some(c) => Err(Status::permission_denied(format!(
                "the node at this address belongs to cluster {}, not to the caller's cluster {c} (an address now used by another cluster?)",
                self.cluster_id
            ))),
        }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = std::result::Result<Frames, Status>> + Send>>;

#[tonic::async_trait]
impl Internal for InternalService {
    type PeerStream = FrameStream;

    async fn peer(
        &self,
        request: Request<Streaming<Frames>>,
    ) -> std::result::Result<Response<Self::PeerStream>, Status> {
        self.check_cluster(&request)?;
        if request.metadata().get(CLUSTER_HEADER).is_none() {
            return Err(Status::permission_denied(
                "peer streams must name their cluster",
            ));
        }
        if let Some(verifier) = &self.peer_verifier {
            verifier.check(&request, "a peer stream")?;
        }
        let node = self
            .node
            .current()
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let inbound = request.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<std::result::Result<Frames, Status>>(256);
        let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Frame>();
        // Replies ready together leave together.
        tokio::spawn(async move {
            while let Some(first) = reply_rx.recv().await {
                let frames = with_queued(first, &mut reply_rx, |f| f.payload.len());
                if out_tx.send(Ok(Frames { frames })).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(serve_frames(node, inbound, reply_tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn client(
        &self,
        request: Request<ClientCall>,
    ) -> std::result::Result<Response<ClientReply>, Status> {
        self.check_cluster(&request)?;
        let call = request.into_inner();
        let started = Instant::now();
        let mut op = None;
        let served = async {
            let request = decode::<ClientRequest>(&call.request)?;
            let node = self.node.current()?;
            if let Some(to) = call.node {
                node.check_addressed(to)?;
            }
            op = request.kv_op();
            node.serve_client(request, call.forward).await
        };
        let result: Result<ClientResponse> = served.await;
        if let (Some(metrics), Some(op)) = (&self.metrics, op) {
            let outcome = result.as_ref().map_or_else(Error::kind, |_| "ok");
            metrics.observe(op, outcome, started.elapsed());
        }
        Ok(Response::new(ClientReply {
            result: encode(&result),
            cluster: self.cluster_id.clone(),
            node: self.node.id(),
        }))
    }
}

type Handled = Pin<Box<dyn std::future::Future<Output = (u64, Result<PeerResponse>)> + Send>>;

/// Serves one peer stream's frames. Raft messages (appends, heartbeats, votes: the hot path)
/// are worked on inside this one task, concurrently, with one timer for the whole stream that
/// cuts each at its sender's deadline; the rest (admin requests, forwarded client requests,
/// snapshot chunks, any of which may do blocking work) get a task of their own.
async fn serve_frames(
    node: Arc<scalestore::node::Node>,
    mut inbound: Streaming<Frames>,
    replies: mpsc::UnboundedSender<Frame>,
) {
    use futures::stream::{AbortHandle, Abortable, FuturesUnordered};
    use futures::StreamExt;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let reply = |id: u64, result: Result<PeerResponse>| {
        let _ = replies.send(Frame {
            id,
            payload: encode(&result),
            to: 0,
            timeout_ms: 0,
        });
    };
    let mut working = FuturesUnordered::<Handled>::new();
    // Work in progress by id, and the deadlines to cut it at (stale entries skipped).
    let mut aborts: HashMap<u64, AbortHandle> = HashMap::new();
    let mut deadlines: BinaryHeap<Reverse<(tokio::time::Instant, u64)>> = BinaryHeap::new();
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        while let Some(Reverse((at, id))) = deadlines.peek().copied() {
            if !aborts.contains_key(&id) {
                deadlines.pop();
            } else {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                break;
            }
        }
        tokio::select! {
            batch = inbound.message() => {
                let Ok(Some(batch)) = batch else { break };
                for frame in batch.frames {
                    let limit = Duration::from_millis(frame.timeout_ms);
                    let request = match decode::<PeerRequest>(&frame.payload) {
                        Ok(request) => request,
                        Err(e) => {
                            reply(frame.id, Err(e));
                            continue;
                        }
                    };
                    let (id, to) = (frame.id, frame.to);
                    if matches!(&request, PeerRequest::Raft { rpc, .. } if !matches!(rpc, RaftRpc::SnapshotChunk { .. })) {
                        let (abort, registration) = AbortHandle::new_pair();
                        let node = node.clone();
                        let work = Abortable::new(
                            async move { node.handle_peer_for(to, request).await },
                            registration,
                        );
                        working.push(Box::pin(async move {
                            let result = work.await.unwrap_or_else(|_| Err(not_within(limit)));
                            (id, result)
                        }));
                        aborts.insert(id, abort);
                        deadlines.push(Reverse((tokio::time::Instant::now() + limit, id)));
                    } else {
                        let (node, replies) = (node.clone(), replies.clone());
                        tokio::spawn(async move {
                            let result =
                                tokio::time::timeout(limit, node.handle_peer_for(to, request))
                                    .await
                                    .unwrap_or_else(|_| Err(not_within(limit)));
                            let _ = replies.send(Frame {
                                id,
                                payload: encode(&result),
                                to: 0,
                                timeout_ms: 0,
                            });
                        });
                    }
                }
            }
            Some((id, result)) = working.next(), if !working.is_empty() => {
                aborts.remove(&id);
                reply(id, result);
            }
            () = &mut timer, if !aborts.is_empty() => {
                let now = tokio::time::Instant::now();
                while let Some(Reverse((at, id))) = deadlines.peek().copied() {
                    if at > now {
                        break;
                    }
                    deadlines.pop();
                    if let Some(abort) = aborts.remove(&id) {
                        abort.abort();
                    }
                }
            }
        }
    }
}

/// The error of work its sender's deadline cut.
fn not_within(limit: Duration) -> Error {
    Error::Unavailable(format!("not handled within {} ms", limit.as_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalestore::types::Vote;

    #[test]
    fn heartbeats_and_votes_take_the_control_lane_and_bulk_appends_do_not() {
        let append = |entries| PeerRequest::Raft {
            group: 1,
            rpc: RaftRpc::Append(openraft::raft::AppendEntriesRequest {
                vote: Vote::new(1, 1),
                prev_log_id: None,
                entries,
                leader_commit: None,
            }),
        };
        assert_eq!(Lane::of(&append(Vec::new())), Lane::Control);
        let vote = PeerRequest::Raft {
            group: 1,
            rpc: RaftRpc::Vote(openraft::raft::VoteRequest::new(Vote::new(1, 1), None)),
        };
        assert_eq!(Lane::of(&vote), Lane::Control);
        let entry = openraft::testing::blank_ent::<scalestore::types::TypeConfig>(1, 1, 1);
        assert_eq!(Lane::of(&append(vec![entry])), Lane::Messages);
        let chunk = PeerRequest::Raft {
            group: 1,
            rpc: RaftRpc::SnapshotChunk {
                transfer: 1,
                offset: 0,
                data: vec![0; 8],
                last: None,
            },
        };
        assert_eq!(Lane::of(&chunk), Lane::Snapshots);
        assert_eq!(
            Lane::of(&PeerRequest::Admin(scalestore::network::AdminRequest::Ping)),
            Lane::Messages
        );
    }

    #[test]
    fn a_batch_stops_taking_frames_at_its_byte_cap_and_keeps_the_rest_in_order() {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        for i in 0..10u8 {
            tx.send(vec![i; 1024 * 1024]).expect("queue");
        }
        let first = rx.try_recv().expect("first");
        let batch = with_queued(first, &mut rx, Vec::len);
        assert_eq!(batch.len(), 4, "4 MiB of 1 MiB frames");
        let next = rx.try_recv().expect("left for the next batch");
        assert_eq!(next[0], 4, "in order");
    }
}
