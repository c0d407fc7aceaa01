//! RocksDB key layout. Every key starts with the 8-byte big-endian group id, so one group's data is
//! one contiguous range and iteration order is index order within a group.
//!
//! | column family | key                          | value                         |
//! |---------------|------------------------------|-------------------------------|
//! | `log`         | group, index (u64 BE)        | postcard(Entry)               |
//! | `raft`        | group, tag (vote/committed/purged) | postcard(value)         |
//! | `sm`          | group, 0x00, tag (applied/membership/snapshot meta) | postcard |
//! | `sm`          | group, 0x01, user key        | user value                    |
//! | `sm`          | group, 0x02, session id      | postcard(SessionState)        |
//! | `sm`          | group, 0x03, tag             | replicated state machine meta (log clock, range descriptor) |
//!
//! Snapshots carry `sm` from 0x01 on: data, sessions and the log clock.

use crate::types::GroupId;

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_SM: &str = "sm";
pub const ALL_CFS: [&str; 3] = [CF_LOG, CF_RAFT, CF_SM];

pub const RAFT_VOTE: u8 = 1;
pub const RAFT_COMMITTED: u8 = 2;
pub const RAFT_PURGED: u8 = 3;

const SM_META: u8 = 0x00;
const SM_DATA: u8 = 0x01;
const SM_SESSION: u8 = 0x02;
const SM_REPLICATED_META: u8 = 0x03;
pub const SM_CLOCK: u8 = 1;
/// Replicated: the shard's range descriptor (see `split`).
pub const SM_DESCRIPTOR: u8 = 2;
pub const SM_APPLIED: u8 = 1;
pub const SM_MEMBERSHIP: u8 = 2;
pub const SM_SNAPSHOT_META: u8 = 3;
/// Present while a snapshot install is under way (names the snapshot): found at open, the install
/// is done again.
pub const SM_INSTALLING: u8 = 4;

pub fn group_prefix(group: GroupId) -> [u8; 8] {
    group.to_be_bytes()
}

/// The first key after every key of `group` (exclusive upper bound of the group's range).
pub fn group_end(group: GroupId) -> Vec<u8> {
    match group.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 9],
    }
}

pub fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

pub fn log_index_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub fn raft_key(group: GroupId, tag: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = tag;
    k
}

pub fn sm_meta_key(group: GroupId, tag: u8) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = SM_META;
    k[9] = tag;
    k
}

pub fn data_key(group: GroupId, user_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + user_key.len());
    k.extend_from_slice(&group.to_be_bytes());
    k.push(SM_DATA);
    k.extend_from_slice(user_key);
    k
}

/// Range of every `sm` key of `group` under `tag`: `[start, end)`.
fn tag_range(group: GroupId, tag: u8) -> (Vec<u8>, Vec<u8>) {
    let mut start = group.to_be_bytes().to_vec();
    start.push(tag);
    let mut end = group.to_be_bytes().to_vec();
    end.push(tag + 1);
    (start, end)
}

/// Range of all data keys of `group`: `[start, end)`.
pub fn data_range(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    tag_range(group, SM_DATA)
}

pub fn session_key(group: GroupId, session: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = SM_SESSION;
    k[9..].copy_from_slice(&session.to_be_bytes());
    k
}

pub fn session_id_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(9..17)?.try_into().ok()?))
}

/// Range of all session keys of `group`: `[start, end)`.
pub fn sessions_range(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    tag_range(group, SM_SESSION)
}

pub fn replicated_meta_key(group: GroupId, tag: u8) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = SM_REPLICATED_META;
    k[9] = tag;
    k
}

/// What a snapshot of `group` carries: everything in `sm` but the local meta keys.
pub fn snapshot_range(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    (tag_range(group, SM_DATA).0, group_end(group))
}

pub fn user_key_of(data_key: &[u8]) -> &[u8] {
    data_key.get(9..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_group_then_index() {
        let mut keys = vec![
            log_key(2, 1),
            log_key(1, 300),
            log_key(1, 2),
            log_key(1, 256),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                log_key(1, 2),
                log_key(1, 256),
                log_key(1, 300),
                log_key(2, 1)
            ]
        );
        assert_eq!(log_index_of(&log_key(7, 42)), Some(42));
    }

    #[test]
    fn data_keys_stay_inside_their_group_range() {
        let (start, end) = data_range(5);
        for k in [&b"a"[..], b"\xff\xff", b""] {
            let dk = data_key(5, k);
            assert!(dk.as_slice() >= start.as_slice() && dk.as_slice() < end.as_slice());
            assert_eq!(user_key_of(&dk), k);
        }
        assert!(sm_meta_key(5, SM_APPLIED).as_slice() < start.as_slice());
        assert!(data_key(4, b"\xff\xff\xff").as_slice() < sm_meta_key(5, SM_APPLIED).as_slice());
        assert!(group_end(5).as_slice() > data_key(5, &[0xff; 64]).as_slice());
    }
}
