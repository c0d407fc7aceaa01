//! openraft's storage conformance suite against ScaleStore's RocksDB stores: once on a fresh
//! RocksDB, once on a RocksDB that already holds another group's data, which must stay untouched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use scalestore::storage::identity::Identity;
use scalestore::storage::{LogStore, NodeStore, StateMachine};
use scalestore::types::{Command, Entry, LogId, Proposal, ProposalBody, TypeConfig, Vote};
use scalestore::StorageOptions;

const GROUP_UNDER_TEST: u64 = 7;
const NEIGHBOUR_GROUP: u64 = 8;
const TTL: u64 = 60_000;

fn open_store(dir: &std::path::Path) -> Arc<NodeStore> {
    NodeStore::open(dir, &Identity::new("suite", 1), StorageOptions::default()).expect("open store")
}

struct FreshStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FreshStore {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path());
        let (log, sm) = store.group_storage(GROUP_UNDER_TEST, TTL).expect("storage");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_stores_pass_openraft_storage_suite() {
    Suite::test_all(FreshStore).await.expect("storage suite");
}

type Dump = Vec<(String, Vec<u8>, Vec<u8>)>;

/// Checks, when a test of the suite is done with the store, that the neighbour group's data is
/// exactly what it was before the test ran.
struct NeighbourCheck {
    store: Arc<NodeStore>,
    before: Dump,
    failures: Arc<Mutex<Vec<String>>>,
    checks: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl Drop for NeighbourCheck {
    fn drop(&mut self) {
        let after = self.store.dump_group(NEIGHBOUR_GROUP).expect("dump");
        if after != self.before {
            self.failures.lock().expect("lock").push(format!(
                "neighbour changed: {} keys before, {} after",
                self.before.len(),
                after.len()
            ));
        }
        self.checks.fetch_add(1, Ordering::SeqCst);
    }
}

struct SharedStore {
    failures: Arc<Mutex<Vec<String>>>,
    checks: Arc<AtomicUsize>,
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

async fn fill_neighbour(store: &Arc<NodeStore>) {
    let (mut log, mut sm) = store.group_storage(NEIGHBOUR_GROUP, TTL).expect("storage");
    let entries: Vec<Entry> = (1..=20)
        .map(|i| {
            Entry::new_normal(
                log_id(1, i),
                Proposal {
                    time_ms: 1_000 + i,
                    body: ProposalBody::Write {
                        session: None,
                        command: Command::Put {
                            key: format!("k{i}").into_bytes(),
                            value: vec![i as u8; 10],
                        },
                    },
                },
            )
        })
        .collect();
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries.clone(), IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("flushed").expect("flush ok");
    log.save_vote(&Vote::new_committed(1, 1))
        .await
        .expect("vote");
    sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
        .await
        .expect("apply");
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, NeighbourCheck> for SharedStore {
    async fn build(
        &self,
    ) -> Result<(NeighbourCheck, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path());
        fill_neighbour(&store).await;
        let before = store.dump_group(NEIGHBOUR_GROUP).expect("dump");
        assert!(
            before.len() >= 41,
            "neighbour has log, vote and data: {}",
            before.len()
        );
        let (log, sm) = store.group_storage(GROUP_UNDER_TEST, TTL).expect("storage");
        let check = NeighbourCheck {
            store,
            before,
            failures: self.failures.clone(),
            checks: self.checks.clone(),
            _dir: dir,
        };
        Ok((check, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_suite_leaves_another_groups_data_untouched() {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let checks = Arc::new(AtomicUsize::new(0));
    let builder = SharedStore {
        failures: failures.clone(),
        checks: checks.clone(),
    };
    Suite::test_all(builder)
        .await
        .expect("storage suite on a shared RocksDB");
    assert!(
        checks.load(Ordering::SeqCst) > 30,
        "every suite test was checked"
    );
    let failures = failures.lock().expect("lock");
    assert!(failures.is_empty(), "{failures:?}");
}
