//! The public Admin service: cluster status, join, decommission, replication factor, events.
//! Map changes go through the shard manager's group (the core's `host` changes); the manager
//! then moves replicas.

use std::time::{Duration, Instant};

use scalestore::host;
use scalestore::manager;
use scalestore::{Error, NodeState};
use tonic::{Request, Response, Status};

use crate::convert;
use crate::proto::admin_server::Admin;
use crate::proto::{
    Event, EventsRequest, EventsResponse, JoinRequest, JoinResponse, NodeInfo, RemoveNodeRequest,
    RemoveNodeResponse, RingRange, SetReplicationRequest, SetReplicationResponse, ShardInfo,
    SplitRequest, SplitResponse, StatusRequest, StatusResponse,
};
use crate::serve::ServiceContext;

pub struct AdminService {
    context: ServiceContext,
}

impl AdminService {
    pub fn new(context: ServiceContext) -> Self {
        AdminService { context }
    }

    fn status(&self, e: &Error) -> Status {
        convert::status(e, self.context.node.map().as_deref())
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _request: Request<StatusRequest>) -> Reply<StatusResponse> {
        let node = self.context.node.current().map_err(|e| self.status(&e))?;
        let map = node.shard_map();
        let status = host::cluster_status(&node)
            .await
            .map_err(|e| self.status(&e))?;
        let nodes = status
            .nodes
            .iter()
            .map(|n| NodeInfo {
                id: n.node,
                address: map.addresses.get(&n.node).cloned().unwrap_or_default(),
                state: match map.nodes.get(&n.node) {
                    Some(NodeState::Leaving) => "leaving".into(),
                    _ => "active".into(),
                },
                up: n.up,
                shards: n.shards.clone(),
                leaders: n.leaders as u32,
                unstartable: n.unstartable.clone(),
            })
            .collect();
        let shards = status
            .shards
            .iter()
            .map(|s| ShardInfo {
                id: s.shard,
                ranges: s
                    .ranges
                    .iter()
                    .map(|r| RingRange {
                        start: r.start,
                        end_inclusive: r.end_inclusive,
                    })
                    .collect(),
                replicas: s.replicas.clone(),
                leader: s.leader,
                term: s.term,
                committed_index: s.committed_index.unwrap_or(0),
                applied_index: s.applied_index.unwrap_or(0),
                approximate_bytes: s.approximate_bytes,
            })
            .collect();
        Ok(Response::new(StatusResponse {
            cluster_id: self.context.cluster_id.clone(),
            map_epoch: map.epoch,
            replication: map.replication as u32,
            nodes,
            shards,
            node: node.id(),
        }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Reply<JoinResponse> {
        if let Some(verifier) = &self.context.peer_verifier {
            verifier.check(&request, "joining")?;
        }
        let r = request.into_inner();
        if self.context.embedded {
            return Err(self.status(&Error::InvalidArgument(
                "an embedded cluster adds nodes through its own API (add_node)".into(),
            )));
        }
        if r.node_id == 0 {
            return Err(self.status(&Error::InvalidArgument("node ids start at 1".into())));
        }
        crate::config::check_address(&r.address)
            .map_err(|e| self.status(&Error::InvalidArgument(e.to_string())))?;
        let node = self.context.node.current().map_err(|e| self.status(&e))?;
        let taken = node
            .shard_map()
            .addresses
            .iter()
            .find(|(id, a)| **id != r.node_id && **a == r.address)
            .map(|(id, _)| *id);
        if let Some(other) = taken {
            return Err(self.status(&Error::InvalidArgument(format!(
                "{} is node {other}'s address",
                r.address
            ))));
        }
        let map = manager::update_map(&node, host::join(r.node_id, Some(r.address.clone())))
            .await
            .map_err(|e| self.status(&e))?;
        self.context.events.record(
            "node_added",
            format!("node {} joined at {}", r.node_id, r.address),
        );
        Ok(Response::new(JoinResponse {
            cluster_id: self.context.cluster_id.clone(),
            map_epoch: map.epoch,
        }))
    }

    async fn remove_node(&self, request: Request<RemoveNodeRequest>) -> Reply<RemoveNodeResponse> {
        let r = request.into_inner();
        let node = self.context.node.current().map_err(|e| self.status(&e))?;
        let (map, _) = manager::read_map(&node)
            .await
            .map_err(|e| self.status(&e))?;
        host::check_removal(&map, r.node_id).map_err(|e| self.status(&e))?;
        manager::update_map(&node, host::leave(r.node_id))
            .await
            .map_err(|e| self.status(&e))?;
        let deadline = Instant::now() + Duration::from_millis(r.wait_ms);
        if r.wait_ms > 0 {
            loop {
                let gone = matches!(manager::read_map(&node).await,
                    Ok((m, _)) if !m.nodes.contains_key(&r.node_id));
                if gone {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(self.status(&Error::Timeout {
                        what: format!("decommissioning node {}", r.node_id),
                        waited_ms: r.wait_ms,
                    }));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(Response::new(RemoveNodeResponse {}))
    }

    async fn set_replication(
        &self,
        request: Request<SetReplicationRequest>,
    ) -> Reply<SetReplicationResponse> {
        let replication = request.into_inner().replication as usize;
        let node = self.context.node.current().map_err(|e| self.status(&e))?;
        let (map, _) = manager::read_map(&node)
            .await
            .map_err(|e| self.status(&e))?;
        host::check_replication(&map, replication).map_err(|e| self.status(&e))?;
        manager::update_map(&node, host::replicate(replication))
            .await
            .map_err(|e| self.status(&e))?;
        self.context.events.record(
            "replication_changed",
            format!("replication factor is now {replication}"),
        );
        Ok(Response::new(SetReplicationResponse {}))
    }

    async fn split(&self, request: Request<SplitRequest>) -> Reply<SplitResponse> {
        let r = request.into_inner();
        let node = self.context.node.current().map_err(|e| self.status(&e))?;
        let plan = scalestore::placement::split::split(&node, r.shard, r.at, &self.context.events)
            .await
            .map_err(|e| self.status(&e))?;
        Ok(Response::new(SplitResponse {
            parent: plan.parent,
            child: plan.child,
            at: plan.at,
        }))
    }

    async fn events(&self, _request: Request<EventsRequest>) -> Reply<EventsResponse> {
        let node = self.context.node.id();
        Ok(Response::new(EventsResponse {
            events: self
                .context
                .events
                .snapshot()
                .into_iter()
                .map(|e| Event {
                    time_ms: e.time_ms,
                    kind: e.kind,
                    detail: e.detail,
                    node,
                })
                .collect(),
        }))
    }
}
