//! Core values <-> `scalestore.v1` messages, and core errors -> gRPC statuses (code by kind,
//! the structured `scalestore.v1.Error` in the status details) and back.

use prost::Message;
use scalestore::{Error, ReadConsistency, ShardMap};
use tonic::{Code, Status};

use crate::proto;

/// The proto consistency enum; an unknown value is an invalid argument.
pub fn consistency(value: i32) -> Result<ReadConsistency, Status> {
    match proto::Consistency::try_from(value) {
        Ok(proto::Consistency::Linearizable) => Ok(ReadConsistency::Linearizable),
        Ok(proto::Consistency::Lease) => Ok(ReadConsistency::Lease),
        Ok(proto::Consistency::Stale) => Ok(ReadConsistency::Stale),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown consistency {value}: 0 (linearizable), 1 (lease) or 2 (stale)"
        ))),
    }
}

/// The gRPC code a generic client should see for `e`.
pub fn code(e: &Error) -> Code {
    match e {
        Error::NotLeader { .. }
        | Error::WrongShard { .. }
        | Error::GroupNotHosted { .. }
        | Error::WrongNode { .. }
        | Error::Unavailable(_) => Code::Unavailable,
        Error::Timeout { .. } => Code::DeadlineExceeded,
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::UnknownNode(_) => Code::NotFound,
        Error::Closed(_) => Code::Cancelled,
        Error::SessionExpired { .. } => Code::Aborted,
        _ => Code::Internal,
    }
}

/// The structured error of `e`; `map` supplies leader addresses and shard ranges.
pub fn error(e: &Error, map: Option<&ShardMap>) -> proto::Error {
    use proto::error::Kind;
    let kind = match e {
        Error::NotLeader {
            group,
            node,
            leader,
        } => Kind::NotLeader(proto::NotLeader {
            shard: *group,
            node: *node,
            leader_id: *leader,
            leader_address: leader
                .zip(map)
                .and_then(|(l, m)| m.addresses.get(&l).cloned())
                .unwrap_or_default(),
        }),
        Error::WrongShard { group, .. } => Kind::WrongShard(proto::WrongShard {
            shard: *group,
            map_epoch: map.map(|m| m.epoch).unwrap_or(0),
            ranges: map
                .and_then(|m| m.shard(*group))
                .map(|s| {
                    s.ranges
                        .iter()
                        .map(|r| proto::RingRange {
                            start: r.start,
                            end_inclusive: r.end_inclusive,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        Error::GroupNotHosted { group, node } => Kind::GroupNotHosted(proto::GroupNotHosted {
            shard: *group,
            node: *node,
        }),
        Error::SessionExpired { group, session } => Kind::SessionExpired(proto::SessionExpired {
            shard: *group,
            session: *session,
        }),
        Error::InvalidArgument(_) => Kind::InvalidArgument(proto::InvalidArgument {}),
        Error::Unavailable(_) | Error::Closed(_) => Kind::Unavailable(proto::Unavailable {}),
        Error::Timeout { waited_ms, .. } => Kind::Timeout(proto::Timeout {
            waited_ms: *waited_ms,
        }),
        Error::UnknownNode(n) => Kind::UnknownNode(proto::UnknownNode { node: *n }),
        _ => Kind::Internal(proto::InternalError {}),
    };
    proto::Error {
        message: e.to_string(),
        kind: Some(kind),
    }
}

/// `e` as a gRPC status: its code, its message, and the structured error in the details.
pub fn status(e: &Error, map: Option<&ShardMap>) -> Status {
    Status::with_details(code(e), e.to_string(), error(e, map).encode_to_vec().into())
}

/// The node is serving as many requests as it takes: retry after `backoff_ms`.
pub fn busy(backoff_ms: u64) -> Status {
    let detail = proto::Error {
        message: format!("the node is busy; retry in {backoff_ms} ms"),
        kind: Some(proto::error::Kind::Busy(proto::Busy { backoff_ms })),
    };
    Status::with_details(
        Code::ResourceExhausted,
        detail.message.clone(),
        detail.encode_to_vec().into(),
    )
}

/// The core error a status stands for: the structured details when present, else by code.
pub fn from_status(status: &Status) -> Error {
    use proto::error::Kind;
    let message = status.message().to_string();
    if let Ok(detail) = proto::Error::decode(status.details()) {
        let message = detail.message.clone();
        match detail.kind {
            Some(Kind::NotLeader(n)) => {
                return Error::NotLeader {
                    group: n.shard,
                    node: n.node,
                    leader: n.leader_id,
                }
            }
            Some(Kind::WrongShard(w)) => {
                return Error::WrongShard {
                    group: w.shard,
                    node: 0,
                }
            }
            Some(Kind::GroupNotHosted(g)) => {
                return Error::GroupNotHosted {
                    group: g.shard,
                    node: g.node,
                }
            }
            Some(Kind::SessionExpired(s)) => {
                return Error::SessionExpired {
                    group: s.shard,
                    session: s.session,
                }
            }
            Some(Kind::InvalidArgument(_)) => return Error::InvalidArgument(message),
            Some(Kind::Timeout(t)) => {
                return Error::Timeout {
                    what: message,
                    waited_ms: t.waited_ms,
                }
            }
            Some(Kind::UnknownNode(u)) => return Error::UnknownNode(u.node),
            Some(Kind::Unavailable(_)) | Some(Kind::Busy(_)) => return Error::Unavailable(message),
            Some(Kind::Internal(_)) | None => {}
        }
    }
    match status.code() {
        Code::InvalidArgument => Error::InvalidArgument(message),
        Code::DeadlineExceeded => Error::Timeout {
            what: message,
            waited_ms: 0,
        },
        Code::Internal | Code::DataLoss | Code::Unknown => Error::Storage(message),
        _ => Error::Unavailable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_not_leader_error_keeps_its_leader_and_address_through_a_status() {
        let mut map = ShardMap::uniform(2, &[1, 2, 3], 3).expect("map");
        map.addresses.insert(2, "127.0.0.1:7002".into());
        let e = Error::NotLeader {
            group: 1,
            node: 3,
            leader: Some(2),
        };
        let s = status(&e, Some(&map));
        assert_eq!(s.code(), Code::Unavailable);
        let detail = proto::Error::decode(s.details()).expect("details");
        match detail.kind {
            Some(proto::error::Kind::NotLeader(n)) => {
                assert_eq!(n.leader_id, Some(2));
                assert_eq!(n.leader_address, "127.0.0.1:7002");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(from_status(&s), e);
    }

    #[test]
    fn invalid_arguments_and_timeouts_map_to_their_grpc_codes() {
        let map = ShardMap::uniform(1, &[1], 1).expect("map");
        let bad = status(&Error::InvalidArgument("too big".into()), Some(&map));
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(matches!(from_status(&bad), Error::InvalidArgument(m) if m.contains("too big")));
        let late = Error::Timeout {
            what: "put".into(),
            waited_ms: 5,
        };
        assert_eq!(status(&late, Some(&map)).code(), Code::DeadlineExceeded);
    }
}
