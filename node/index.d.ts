// ScaleStore for Node.js: the public API. Keys and values are strings (UTF-8), Buffers or
// Uint8Arrays; values come back as Buffers, or as strings from a client made with an
// `encoding` (`connect(..., { encoding: 'utf8' })`, `cluster.client({ encoding: 'utf8' })`). Every method that returns a Promise reports every
// failure as its rejection: a TypeError for an argument of the wrong type, else a
// ScaleStoreError with a `code`.

/// <reference types="node" />

export type Bytes = string | Buffer | Uint8Array
export type Consistency = 'linearizable' | 'lease' | 'stale'
export type ErrorCode =
  | 'UNAVAILABLE'
  | 'TIMEOUT'
  | 'INVALID_ARGUMENT'
  | 'CLOSED'
  | 'SESSION_EXPIRED'
  | 'STORAGE'
  | 'DATA_DIR'
  /** A client-only build has no embedded cluster (Cluster.start, runSuite). */
  | 'UNSUPPORTED'

export declare class ScaleStoreError extends Error {
  readonly code: ErrorCode
  /** The core's stable label: 'not_leader', 'unknown_node', 'timeout', 'invalid_argument', ... (as Python's `.kind`). */
  readonly kind: string
  static readonly CODES: readonly ErrorCode[]
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown, kind?: string })
}

export interface CallOptions {
  /** Milliseconds; default: the client's (10 s, or connect's timeoutMs). */
  timeoutMs?: number
}
export interface DecodeOptions {
  /** This call's values (and scanned keys) as strings in this encoding; null: Buffers. Default: the client's. */
  encoding?: BufferEncoding | null
}
export interface ReadOptions extends CallOptions, DecodeOptions {
  consistency?: Consistency
}
export interface CasOptions extends CallOptions, DecodeOptions {
  /** Resolve { success, current } instead of a boolean. */
  returnCurrent?: boolean
}
export interface CasOutcome<V> {
  success: boolean
  /** The value after the operation: `next` on success, the value that did not match otherwise. */
  current: V | null
}
export interface ScanOptions extends ReadOptions {
  start?: Bytes
  /** Exclusive. */
  end?: Bytes
  prefix?: Bytes
  /** undefined: every match. */
  limit?: number
}
export interface ScanIterOptions extends ReadOptions {
  start?: Bytes
  end?: Bytes
  prefix?: Bytes
  /** Pairs fetched per page (default 1000). */
  pageSize?: number
}

export interface NodeStatus {
  id: number
  alive: boolean
  /** Shards hosted. */
  shards: number
  /** Shards led. */
  leaders: number
}
export interface ShardStatus {
  id: number
  leader: number | null
  replicas: number[]
  term: number
  commitIndex: number
  appliedIndex: number
  /** Bytes of user data (approximate). */
  size: number
  /** A voter change the manager has yet to finish. */
  joint: boolean
}
export interface Status {
  nodes: NodeStatus[]
  shards: ShardStatus[]
}
export interface ClusterEvent {
  /** Milliseconds since the Unix epoch. */
  time: number
  /** leader_changed, node_stopped, node_started, move_started, move_finished, ... */
  kind: string
  detail: string
}

/** One recorded operation, with the fields of the core's JSON lines. */
export type Operation = Record<string, unknown>

export declare class History implements Iterable<Operation> {
  static fromJsonl(text: string): History
  readonly length: number
  toJsonl(): string
  operations(): Operation[]
  [Symbol.iterator](): Iterator<Operation>
  toJSON(): Operation[]
}

export interface CheckResult {
  ok: boolean
  verdict: 'linearizable' | 'not_linearizable' | 'unknown'
  counterexample: string | null
}

/** V: what values and scanned keys come back as (Buffer, or string for a client with an encoding). */
export declare class Client<V extends Buffer | string = Buffer> {
  /** What values and scanned keys are decoded with (null: Buffers). */
  readonly encoding: BufferEncoding | null
  put(key: Bytes, value: Bytes, options?: CallOptions): Promise<void>
  get(key: Bytes, options?: ReadOptions): Promise<V | null>
  /** true if the key existed. */
  delete(key: Bytes, options?: CallOptions): Promise<boolean>
  /** Deletes every key starting with `prefix` ('': every key); resolves how many. Atomic per shard, not across shards. */
  deletePrefix(prefix: Bytes, options?: CallOptions): Promise<number>
  /** The new length in bytes. */
  append(key: Bytes, value: Bytes, options?: CallOptions): Promise<number>
  /** expected null: the key must be absent. */
  cas(key: Bytes, expected: Bytes | null, next: Bytes, options?: CasOptions & { returnCurrent?: false }): Promise<boolean>
  cas(key: Bytes, expected: Bytes | null, next: Bytes, options: CasOptions & { returnCurrent: true }): Promise<CasOutcome<V>>
  scan(options?: ScanOptions): Promise<Array<[V, V]>>
  scanIter(options?: ScanIterOptions): AsyncGenerator<[V, V], void, undefined>
  getMany(keys: Bytes[], options?: ReadOptions): Promise<Array<V | null>>
  putMany(
    entries: Record<string, Bytes> | Map<Bytes, Bytes> | Iterable<[Bytes, Bytes]>,
    options?: CallOptions,
  ): Promise<void>
  status(options?: CallOptions): Promise<Status>
  /**
   * Splits `shard` online: the part of its ring range from `at` (default: the middle of its
   * largest range) becomes a new shard on its replicas. Resolves to the new shard's id.
   */
  split(shard: number, options?: CallOptions & { at?: bigint | number }): Promise<number>
  events(options?: CallOptions): Promise<ClusterEvent[]>
  /** Records this client's operations while `fn` runs. */
  record(fn: () => unknown | Promise<unknown>): Promise<History>
  readonly node: number | null
  readonly closed: boolean
  close(): Promise<void>
}

export interface ClusterOptions {
  nodes?: number
  shards?: number
  replication?: number
  /** Kept across runs; undefined: a temporary dir removed on close() and at exit. */
  dataDir?: string
  seed?: number
}

export interface LoadOptions {
  writers?: number
  /** Share of reads, 0 to 1. */
  readRatio?: number
  consistency?: Consistency
  keys?: number
  valueSize?: number
}
export interface TimelineRow {
  /** Seconds since the start. */
  t: number
  /** Operations in this 100 ms. */
  ops: number
  p50Ms: number
  p99Ms: number
  errors: number
}
export interface LoadReport {
  opsPerS: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  p999Ms: number
  errors: number
  operations: number
  seconds: number
  timeline: TimelineRow[]
}
export declare class LoadRun {
  readonly elapsed: number
  readonly running: boolean
  stop(): Promise<LoadReport>
}

export declare class Cluster {
  static start(options?: ClusterOptions): Promise<Cluster>
  client(options?: { node?: number }): Client
  client(options: { node?: number; encoding: BufferEncoding }): Client<string>
  readonly nodeIds: number[]
  readonly dataDir: string | null
  readonly seed: number
  readonly closed: boolean
  shardOf(key: Bytes): number
  leaderOf(shard: number): Promise<number | null>
  stopNode(id: number): Promise<void>
  startNode(id: number): Promise<void>
  partition(...groups: number[][]): Promise<void>
  heal(): Promise<void>
  setNetwork(options?: { dropRate?: number; delayMs?: number; jitterMs?: number }): Promise<void>
  addNode(): Promise<number>
  /** timeoutMs: default 120 s. */
  removeNode(id: number, options?: CallOptions | number): Promise<void>
  setReplication(replication: number): Promise<void>
  /** Splits `shard` online (see Client.split); the new shard's id. */
  split(shard: number, options?: { at?: bigint | number }): Promise<number>
  status(): Promise<Status>
  events(): Promise<ClusterEvent[]>
  waitForLeaders(timeoutMs?: number): Promise<void>
  waitUntilSettled(timeoutMs?: number): Promise<void>
  serve(address?: string): Promise<string>
  record(fn: () => unknown | Promise<unknown>): Promise<History>
  startLoad(options?: LoadOptions): LoadRun
  close(): Promise<void>
}

export interface TlsOptions {
  /** PEM contents of the cluster's CA. */
  ca: string | Buffer
  cert?: string | Buffer
  key?: string | Buffer
  /** The name the nodes' certificates are checked against instead of the host dialed. */
  serverName?: string
}
export interface ConnectOptions extends CallOptions {
  /** How long fetching the map from the endpoints may take; default: timeoutMs. */
  connectTimeoutMs?: number
  /** Longest wait for one attempt before another node is tried (default 2000). */
  attemptTimeoutMs?: number
  tls?: TlsOptions
  /** Values and scanned keys as strings in this encoding (default: Buffers). */
  encoding?: BufferEncoding | null
  /**
   * Advertised address -> the address this client reaches that node at ('host:port' each),
   * for nodes behind NAT, Docker or Kubernetes port mapping; default: $SCALESTORE_ADDRESS_MAP.
   */
  addressMap?: Record<string, string> | Map<string, string>
  /** Pause after a failed attempt (default 5), doubled up to backoffMaxMs (default 200). */
  backoffInitialMs?: number
  backoffMaxMs?: number
}
/** endpoints undefined or null: $SCALESTORE_ENDPOINTS. */
export declare function connect(endpoints?: string | string[] | null, options?: ConnectOptions & { encoding?: null }): Promise<Client>
export declare function connect(endpoints: string | string[] | null | undefined, options: ConnectOptions & { encoding: BufferEncoding }): Promise<Client<string>>

export declare function checkLinearizable(history: History): Promise<CheckResult>

export declare const NEMESES: readonly string[]
export interface SuiteOptions {
  nemesis: string
  seed?: number
  seconds?: number
}
export interface SuiteReport {
  passed: boolean
  verdict: 'linearizable' | 'not_linearizable' | 'unknown'
  operations: number
  lost: number
  duplicated: number
  lostAppends: string[]
  duplicatedAppends: string[]
  recoveryMs: number | null
  nemesis: string
  seed: number
  acknowledged: number
  unknown: number
  counterexample: string | null
  snapshotsInstalled: number
  placementProblems: string[]
  summary: string
  history: History
}
export declare function runSuite(options: SuiteOptions): Promise<SuiteReport>
