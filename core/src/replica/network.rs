//! Node-to-node messaging. Every message names its group, so one transport per node carries the
//! Raft traffic of all the groups it hosts. [`PeerTransport`] is the seam: the embedded cluster
//! implements it in-process (see `cluster.rs`), the gRPC server will implement it over the wire.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::{ClientRequest, ClientResponse, GroupStatus};
use crate::replica::failpoints::Failpoints;
use crate::replica::snapshot_transfer::{read_chunk, CHUNK_BYTES};
use crate::replica::storage::{count, SnapshotFile, StorageStats};
use crate::sharding::ShardMap;
use crate::types::{GroupId, LogId, NodeId, SnapshotMeta, TypeConfig, Vote};

/// A Raft RPC of one group.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// One chunk of snapshot transfer `transfer` (a random id), at byte `offset` of the file.
    /// The last chunk carries the leader's vote and the snapshot's meta: the receiver installs
    /// the snapshot once that chunk has completed a file whose checksum verifies.
    SnapshotChunk {
        transfer: u64,
        offset: u64,
        data: Vec<u8>,
        last: Option<Box<(Vote, SnapshotMeta)>>,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    /// A chunk other than the last was stored.
    SnapshotChunkStored,
    Snapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
}

/// What the shard manager asks of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Are you there? Answered with the groups the node runs.
    Ping,
    /// Start (or keep) a replica of `group`; an empty one waits to be added by its leader.
    StartGroup {
        group: GroupId,
    },
    /// Stop the replica of `group` and delete its data from this node. `excluded_at`: the log
    /// id of the leader's membership without this node; a replica that has since seen a newer
    /// membership naming it (it was added back) refuses.
    DestroyGroup {
        group: GroupId,
        excluded_at: Option<LogId>,
    },
    /// On the group's leader: add `node` as a learner and wait until it has caught up.
    AddLearner {
        group: GroupId,
        node: NodeId,
    },
    /// On the group's leader: make `voters` the voter set (joint consensus inside). With a
    /// `fence`, only while the group's effective membership is the one logged at it.
    ChangeVoters {
        group: GroupId,
        voters: Vec<NodeId>,
        fence: Option<LogId>,
    },
    /// On the group's leader: make the membership uniform with exactly `voters` and no other
    /// learners, always writing at least one membership entry (so any change fenced by an
    /// earlier membership is refused from then on). `fence`: the membership this is planned
    /// against.
    ResetVoters {
        group: GroupId,
        voters: Vec<NodeId>,
        fence: Option<LogId>,
    },
    /// On the group's leader: hand leadership to `to`.
    TransferLeader {
        group: GroupId,
        to: NodeId,
    },
    Status {
        group: GroupId,
    },
    /// Approximate bytes of user data of `group` on the node.
    Size {
        group: GroupId,
    },
    /// The new cluster map.
    SetMap(Box<ShardMap>),
    /// On the shard's leader: propose the split (see `replica::storage::split`); answered with
    /// the parent's descriptor version after it, or the reason the shard refused it.
    Split(crate::sharding::SplitPlan),
    /// The liveness exchange of hibernation (one per node pair per interval): the groups the
    /// sender leads that are asleep.
    Liveness {
        from: NodeId,
        asleep: Vec<crate::replica::hibernation::Asleep>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum AdminReply {
    Done,
    /// A split applied: the parent's descriptor version after it.
    Split {
        version: u64,
    },
    /// The answer to `Liveness`: the groups the answering node leads that are asleep.
    Liveness {
        node: NodeId,
        asleep: Vec<crate::replica::hibernation::Asleep>,
    },
    Status(Box<GroupStatus>),
    /// The groups a node runs (the answer to `Ping`), and the id of the node answering: the
    /// manager ignores an answer from another node than the one it pinged.
    Groups {
        node: NodeId,
        groups: Vec<GroupId>,
        /// The groups it leads: what the manager balances leaders by, with no question per
        /// group.
        leading: Vec<Led>,
        /// Groups on its disk that could not start.
        unstartable: Vec<GroupId>,
    },
    Size(u64),
}

/// A group a node leads, as its answer to a ping says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Led {
    pub group: GroupId,
    pub term: u64,
    /// Its membership is joint (a voter change between its two steps).
    pub joint: bool,
}

/// What one node sends another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Raft {
        group: GroupId,
        rpc: RaftRpc,
    },
    /// A client request forwarded to the leader by the node it entered through.
    Client(ClientRequest),
    Admin(AdminRequest),
}

// A reply is built once and moved once into its frame: boxing the client answer would cost an
// allocation on the hot path to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Raft(RaftReply),
    Client(ClientResponse),
    Admin(AdminReply),
}

/// How long a peer call waits for its answer when its caller names no other bound.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one snapshot chunk's transfer may take (the sender's rate limit included).
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long installing a received snapshot may take, on top of its last chunk's transfer: a
/// slow install is waited for, not answered with a timeout that makes the leader send the
/// whole snapshot again.
pub const SNAPSHOT_INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How many times a sender waits out [`SNAPSHOT_INSTALL_TIMEOUT`] for one install before it gives
/// the transfer up: the receiver keeps installing a complete transfer, and a sender that asks
/// again (with its last chunk) waits for that install instead of sending the snapshot again.
pub const SNAPSHOT_INSTALL_ASKS: u32 = 6;
/// Entry bytes (keys and values) one append carries at most; it always carries its first entry.
/// A catch-up of large entries goes in pieces, each of which crosses a slow link well within an
/// election timeout (openraft bounds an append by entry count only: 300 entries of 16 MiB would
/// be one 4.8 GiB message).
pub const APPEND_BYTES: usize = 1024 * 1024;

/// Delivers requests between nodes. Implementations decide what the "wire" is.
#[async_trait]
pub trait PeerTransport: Send + Sync + 'static {
    /// Sends `request` to node `to` and waits at most `timeout` for the answer. The deadline
    /// travels with the request (as gRPC's `grpc-timeout` does): the receiver works on it no
    /// longer than that, and no shorter.
    async fn send(
        &self,
        from: NodeId,
        to: NodeId,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse>;
}

/// openraft's network factory for one group on one node.
pub struct GroupNetworkFactory {
    pub(crate) node: NodeId,
    pub(crate) group: GroupId,
    pub(crate) transport: Arc<dyn PeerTransport>,
    pub(crate) failpoints: Arc<Failpoints>,
    pub(crate) stats: Arc<StorageStats>,
}

/// openraft's connection from one node to another, for one group.
pub struct GroupNetwork {
    from: NodeId,
    to: NodeId,
    group: GroupId,
    transport: Arc<dyn PeerTransport>,
    failpoints: Arc<Failpoints>,
    stats: Arc<StorageStats>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> GroupNetwork {
        GroupNetwork {
            from: self.node,
            to: target,
            group: self.group,
            transport: self.transport.clone(),
            failpoints: self.failpoints.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl GroupNetwork {
    async fn call(&self, rpc: RaftRpc) -> Result<RaftReply> {
        let timeout = match &rpc {
            RaftRpc::SnapshotChunk { last: Some(_), .. } => self.failpoints.last_chunk_wait(),
            RaftRpc::SnapshotChunk { .. } => SNAPSHOT_CHUNK_TIMEOUT,
            _ => PEER_TIMEOUT,
        };
        let req = PeerRequest::Raft {
            group: self.group,
            rpc,
        };
        match self
            .transport
            .send(self.from, self.to, req, timeout)
            .await?
        {
            PeerResponse::Raft(reply) => Ok(reply),
            _ => Err(Error::Unavailable("unexpected reply kind".into())),
        }
    }
}

/// The bytes an entry carries (keys and values; the fixed part of an entry is small).
fn entry_bytes(entry: &crate::types::Entry) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(proposal) => match &proposal.body {
            crate::types::ProposalBody::Write { command, .. } => command
                .keys()
                .into_iter()
                .chain(command.values())
                .map(<[u8]>::len)
                .sum(),
            crate::types::ProposalBody::OpenSession | crate::types::ProposalBody::Split(_) => 0,
        },
        _ => 0,
    }
}

/// `rpc` cut to the entries that fit in `max_bytes` (its first entry always does). When it was
/// cut, also the id of the last entry kept: the follower's success then means only that much
/// was replicated. The cut request's commit index goes no further than its last entry, so a
/// follower never commits an entry it was not sent.
fn capped(
    mut rpc: AppendEntriesRequest<TypeConfig>,
    max_bytes: usize,
) -> (AppendEntriesRequest<TypeConfig>, Option<LogId>) {
    let mut bytes = 0;
    let keep = rpc
        .entries
        .iter()
        .position(|e| {
            bytes += entry_bytes(e);
            bytes > max_bytes
        })
        .map_or(rpc.entries.len(), |over| over.max(1));
    if keep == rpc.entries.len() {
        return (rpc, None);
    }
    rpc.entries.truncate(keep);
    let last = rpc.entries.last().map(|e| e.log_id);
    rpc.leader_commit = std::cmp::min(rpc.leader_commit, last);
    (rpc, last)
}

impl GroupNetwork {
    /// Sends a transfer's last chunk, which the receiver answers once it has installed the
    /// snapshot. A slow install outlives the wait: the chunk is sent again (the receiver may
    /// never have had it), and a receiver already installing that transfer just waits on.
    async fn last_chunk(
        &self,
        transfer: u64,
        offset: u64,
        data: Vec<u8>,
        meta: Box<(Vote, SnapshotMeta)>,
    ) -> Result<RaftReply> {
        let mut asks = 0;
        loop {
            asks += 1;
            let rpc = RaftRpc::SnapshotChunk {
                transfer,
                offset,
                data: data.clone(),
                last: Some(meta.clone()),
            };
            let started = tokio::time::Instant::now();
            match self.call(rpc).await {
                // Only a wait that ran out is asked again: any other error ends the transfer.
                Err(_)
                    if asks < SNAPSHOT_INSTALL_ASKS
                        && started.elapsed() >= self.failpoints.last_chunk_wait() => {}
                other => return other,
            }
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    Unreachable::<TypeConfig>::from_string(e).into()
}

fn unreachable_streaming(e: impl std::fmt::Display) -> StreamingError<TypeConfig> {
    Unreachable::<TypeConfig>::from_string(e).into()
}

fn mismatch(what: &str) -> RPCError<TypeConfig> {
    unreachable(format!("mismatched reply to {what}"))
}

impl RaftNetworkV2<TypeConfig> for GroupNetwork {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let (rpc, sent_up_to) = capped(rpc, APPEND_BYTES);
        match self.call(RaftRpc::Append(rpc)).await.map_err(unreachable)? {
            RaftReply::Append(AppendEntriesResponse::Success) if sent_up_to.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(sent_up_to))
            }
            RaftReply::Append(r) => Ok(r),
            _ => Err(mismatch("append")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        count(&self.stats.vote_requests_sent, 1);
        match self.call(RaftRpc::Vote(rpc)).await.map_err(unreachable)? {
            RaftReply::Vote(r) => Ok(r),
            _ => Err(mismatch("vote")),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        count(&self.stats.pre_vote_requests_sent, 1);
        match self
            .call(RaftRpc::PreVote(rpc))
            .await
            .map_err(unreachable)?
        {
            RaftReply::Vote(r) => Ok(r),
            _ => Err(mismatch("pre_vote")),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<
            openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>,
            NodeId,
            BasicNode,
            SnapshotFile,
        >,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let stream = async {
            let path = snapshot.snapshot.path;
            // One handle for the whole transfer: deleting the file now (the sender's next build
            // does) cannot cut it.
            let mut file = std::fs::File::open(&path).map_err(unreachable_streaming)?;
            if self.failpoints.take_delete_sent_snapshot() {
                let _ = std::fs::remove_file(&path);
            }
            let transfer: u64 = crate::sim::random_u64();
            let mut offset = 0u64;
            let mut last_meta = Some(Box::new((vote, snapshot.meta)));
            loop {
                let (f, data) = read_chunk(file).await.map_err(unreachable_streaming)?;
                file = f;
                let last = data.len() < CHUNK_BYTES;
                let len = data.len() as u64;
                let reply = match if last { last_meta.take() } else { None } {
                    Some(meta) => self.last_chunk(transfer, offset, data, meta).await,
                    None => {
                        let rpc = RaftRpc::SnapshotChunk {
                            transfer,
                            offset,
                            data,
                            last: None,
                        };
                        self.call(rpc).await
                    }
                }
                .map_err(unreachable_streaming)?;
                offset += len;
                count(&self.stats.snapshot_bytes_sent, len);
                match reply {
                    RaftReply::Snapshot(r) if last => {
                        count(&self.stats.snapshots_sent, 1);
                        return Ok(r);
                    }
                    RaftReply::SnapshotChunkStored if !last => {}
                    _ => return Err(unreachable_streaming("mismatched reply to snapshot chunk")),
                }
                if offset == len && self.failpoints.take_cut_snapshot_transfer() {
                    return Err(unreachable_streaming("snapshot transfer cut (failpoint)"));
                }
            }
        };
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = stream => result,
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(RaftRpc::TransferLeader(req))
            .await
            .map_err(unreachable)?
        {
            RaftReply::TransferLeader(r) => Ok(r),
            _ => Err(mismatch("transfer_leader")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, Entry, Proposal, ProposalBody};

    fn put(index: u64, bytes: usize) -> Entry {
        let mut entry = openraft::testing::blank_ent::<TypeConfig>(1, 1, index);
        entry.payload = openraft::EntryPayload::Normal(Proposal {
            time_ms: 0,
            body: ProposalBody::Write {
                session: None,
                command: Command::Put {
                    key: b"k".to_vec(),
                    value: vec![0; bytes - 1],
                },
            },
        });
        entry
    }

    fn append(entries: Vec<Entry>, commit: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            leader_commit: Some(openraft::testing::log_id::<TypeConfig>(1, 1, commit)),
            entries,
        }
    }

    #[test]
    fn an_append_over_its_byte_cap_is_cut_after_its_last_whole_entry_and_commits_no_further() {
        let rpc = append((1..=5).map(|i| put(i, 400)).collect(), 5);
        let (cut, up_to) = capped(rpc, 1000);
        assert_eq!(
            cut.entries.len(),
            2,
            "two 400-byte entries fit in 1000 bytes"
        );
        assert_eq!(
            up_to,
            Some(openraft::testing::log_id::<TypeConfig>(1, 1, 2))
        );
        assert_eq!(
            cut.leader_commit, up_to,
            "the commit index stops at the last entry sent"
        );
        // An entry larger than the cap still goes, alone; a request within it goes whole.
        let (alone, up_to) = capped(append(vec![put(1, 5000), put(2, 10)], 1), 1000);
        assert_eq!((alone.entries.len(), up_to.map(|l| l.index)), (1, Some(1)));
        let (whole, up_to) = capped(append(vec![put(1, 10), put(2, 10)], 2), 1000);
        assert_eq!((whole.entries.len(), up_to), (2, None));
        assert_eq!(whole.leader_commit.map(|l| l.index), Some(2));
    }
}
