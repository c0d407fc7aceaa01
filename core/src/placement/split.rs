//! Splits as the shard manager runs them. A split is planned against the map (the next free
//! shard id, the parent's descriptor version) and the parent's membership, recorded in the map
//! as pending, proposed to the parent's leader (the parent applies it on every replica, see
//! `replica::storage::split`), then recorded: the parent's range shrinks and the child joins
//! the map on the parent's replicas. A manager that takes over finds the pending split and
//! finishes it: a split the parent already applied is recorded, one it refused is dropped.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::placement::events::EventLog;
use crate::placement::manager::{admin, find_leader, update_map_via, Via};
use crate::replica::network::{AdminReply, AdminRequest};
use crate::replica::node::Node;
use crate::sharding::{ShardMap, SplitPlan};
use crate::types::GroupId;

/// How long the parent's leader gets to apply a split.
const SPLIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Splits `shard` at ring position `at` (default: the middle of its largest range) and returns
/// the plan once the map records it. Bad input (a shard that does not exist, a position outside
/// it or at the start of its range) is `InvalidArgument`; a shard mid-move or another split
/// under way is a retryable `Unavailable` ("busy"), and nothing changes.
pub async fn split(
    node: &Node,
    shard: GroupId,
    at: Option<u64>,
    events: &EventLog,
) -> Result<SplitPlan> {
    let (map, _) = crate::placement::manager::read_map(node).await?;
    let mut plan = map.plan_split(shard, at)?;
    let replicas = map.replicas_of(shard).unwrap_or_default().to_vec();
    let (_, status) = leader_of(node, shard, &replicas).await?;
    if status.shard_version != plan.version {
        return Err(Error::Unavailable(format!(
            "busy: shard {shard} is at version {} and the map at {}: a split is being recorded",
            status.shard_version, plan.version
        )));
    }
    plan.membership = status.membership_log_id;
    let planned = plan.clone();
    let recorded = update_map_via(node, Via::AnyNode, move |m| {
        if m.pending_split.as_ref() == Some(&planned) {
            return Ok(false);
        }
        let fresh = m.plan_split(planned.parent, Some(planned.at))?;
        if (fresh.child, fresh.version, &fresh.ranges)
            != (planned.child, planned.version, &planned.ranges)
        {
            return Err(Error::Unavailable(format!(
                "busy: shard {} changed while its split was planned",
                planned.parent
            )));
        }
        m.pending_split = Some(planned.clone());
        m.next_shard_id = planned.child + 1;
        Ok(true)
    })
    .await?;
    if recorded.pending_split.as_ref() != Some(&plan) {
        return Err(Error::Unavailable(format!(
            "busy: another change of shard {shard} won the map"
        )));
    }
    events.record("split_started", describe(&plan));
    // Recorded as pending, the split will be finished (by this call or the manager): wait for
    // that, through leader changes and slow answers, rather than report an error for a split
    // that then happens.
    let deadline = tokio::time::Instant::now() + FINISH_WAIT;
    loop {
        let error = match finish(node, &plan, Via::AnyNode, events).await {
            Ok(Finished::Recorded) => return Ok(plan),
            Ok(Finished::Refused(reason)) => {
                return Err(Error::Unavailable(format!(
                    "busy: shard {} refused the split ({reason}); plan it again",
                    plan.parent
                )))
            }
            Err(e) => e,
        };
        let retry = error.is_retryable() || matches!(error, Error::Timeout { .. });
        if !retry || tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (map, _) = crate::placement::manager::read_map(node).await?;
        if map.shard(plan.child).is_some() {
            return Ok(plan);
        }
        if map.pending_split.as_ref() != Some(&plan) {
            return Err(error);
        }
    }
}

/// How a pending split ended.
pub(crate) enum Finished {
    /// Applied by the shard (now or before) and recorded in the map.
    Recorded,
    /// Refused by the shard (its version or membership moved on) and dropped from the map.
    Refused(String),
}

/// How long a split call waits for a split it recorded to finish.
const FINISH_WAIT: Duration = Duration::from_secs(60);

/// Proposes the pending `plan` to its shard (again, if an earlier attempt's outcome is
/// unknown) and records the outcome in the map: applied (now or before), the split joins the
/// map; refused, it is dropped. An unknown outcome (no leader, a timeout) leaves it pending for
/// the manager's next tick.
pub(crate) async fn finish(
    node: &Node,
    plan: &SplitPlan,
    via: Via,
    events: &EventLog,
) -> Result<Finished> {
    let (map, _) = crate::placement::manager::read_map(node).await?;
    let replicas = map.replicas_of(plan.parent).unwrap_or_default().to_vec();
    let (leader, status) = leader_of(node, plan.parent, &replicas).await?;
    let outcome = if status.shard_version > plan.version {
        // Applied by an earlier attempt (nothing else changes a shard's version while its split
        // is pending in the map).
        Ok(())
    } else {
        match admin(
            node,
            leader,
            AdminRequest::Split(plan.clone()),
            SPLIT_TIMEOUT,
        )
        .await
        {
            Ok(AdminReply::Split { .. }) => Ok(()),
            Ok(other) => Err(Error::Unavailable(format!(
                "unexpected answer to a split: {other:?}"
            ))),
            Err(e) => Err(e),
        }
    };
    match outcome {
        Ok(()) => {
            let done = plan.clone();
            update_map_via(node, via, move |m| m.record_split(&done)).await?;
            events.record("split_finished", describe(plan));
            Ok(Finished::Recorded)
        }
        Err(Error::InvalidArgument(reason)) => {
            // The shard refused it (its version or membership moved on): nothing was applied.
            let dropped = plan.clone();
            update_map_via(node, via, move |m: &mut ShardMap| {
                let pending = m.pending_split.as_ref() == Some(&dropped);
                if pending {
                    m.pending_split = None;
                }
                Ok(pending)
            })
            .await?;
            events.record("split_refused", format!("{}: {reason}", describe(plan)));
            Ok(Finished::Refused(reason))
        }
        Err(e) => Err(e),
    }
}

/// The shard's leader, waited for a few seconds (a shard just split off elects its first
/// leader within moments).
async fn leader_of(
    node: &Node,
    shard: GroupId,
    replicas: &[crate::types::NodeId],
) -> Result<(crate::types::NodeId, crate::protocol::GroupStatus)> {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        match find_leader(node, shard, replicas).await {
            Err(Error::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// How long a split waits for its shard to have a leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);

fn describe(plan: &SplitPlan) -> String {
    format!(
        "shard {} at {:#018x}: upper part -> shard {}",
        plan.parent, plan.at, plan.child
    )
}
