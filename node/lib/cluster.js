'use strict'
// Cluster (core embedded/cluster.rs): many nodes in this process, with fault injection, for
// tests and experiments. Slow operations run off the event loop and resolve Promises.

const fs = require('node:fs')
const addon = require('./native')
const args = require('./args')
const { native, invalid, now, requireEmbedded } = require('./error')
const { Client, statusOf, eventsOf } = require('./client')
const { recording } = require('./history')
const { LoadRun } = require('./load')

// Temporary data dirs of clusters still open: removed at exit even if close() was forgotten
// (the nodes' threads do not keep the process alive; at exit they stop as in a crash).
const temporary = new Set()
let exitHookInstalled = false
function removeAtExit (dir) {
  temporary.add(dir)
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', () => {
    for (const d of temporary) {
      try {
        fs.rmSync(d, { recursive: true, force: true })
      } catch {}
    }
  })
}

class Cluster {
  /** Use Cluster.start(). */
  constructor (inner, temporaryDir) {
    this._inner = inner
    this._temporaryDir = temporaryDir
  }

  /**
   * Starts an embedded cluster. Every option is optional: undefined means the value stored in
   * `dataDir` when it holds a cluster, else 3 nodes, 8 shards and min(3, nodes) replicas.
   */
  static async start (opts) {
    const o = args.options(opts)
    const start = {
      nodes: args.optionalCount(o.nodes, 'nodes', 1),
      shards: args.optionalCount(o.shards, 'shards', 1),
      replication: args.optionalCount(o.replication, 'replication', 1),
      seed: args.optionalNumber(o.seed, 'seed'),
    }
    if (o.dataDir !== undefined) {
      if (typeof o.dataDir !== 'string') throw new TypeError('dataDir must be a string (a path)')
      if (o.dataDir === '') throw invalid('dataDir must not be empty')
      start.dataDir = o.dataDir
    }
    if (start.seed !== undefined && (!Number.isInteger(start.seed) || start.seed < 0)) {
      throw invalid(`seed must be a whole number from 0, not ${start.seed}`)
    }
    requireEmbedded(addon, 'Cluster.start()')
    const inner = await native(() => addon.startCluster(start))
    const temporaryDir = start.dataDir === undefined ? inner.dataDir : null
    if (temporaryDir) removeAtExit(temporaryDir)
    return new Cluster(inner, temporaryDir)
  }

  /** A client of this cluster; `{ node }` pins it to one node, `{ encoding: 'utf8' }` returns strings. */
  client (opts) {
    const o = args.options(opts)
    const node = args.optionalCount(o.node, 'node')
    const encoding = args.encoding(o.encoding)
    return new Client(now(() => this._inner.client(node)), encoding)
  }

  /** Every member, stopped ones included (removed ones not). */
  get nodeIds () {
    return now(() => this._inner.nodeIds)
  }

  get dataDir () {
    return now(() => this._inner.dataDir) ?? null
  }

  get seed () {
    return now(() => this._inner.seed)
  }

  get closed () {
    return this._inner.closed
  }

  /** The shard a key belongs to. */
  shardOf (key) {
    const k = args.bytes(key, 'key')
    return now(() => this._inner.shardOf(k))
  }

  async leaderOf (shard) {
    const s = args.count(shard, 'shard')
    return (await native(() => this._inner.leaderOf(s))) ?? null
  }

  /** Crash-stops a node. */
  async stopNode (id) {
    const n = args.nodeId(id)
    await native(() => this._inner.stopNode(n))
  }

  /** Restarts a stopped node from its data dir. */
  async startNode (id) {
    const n = args.nodeId(id)
    await native(() => this._inner.startNode(n))
  }

  /** partition([1], [2, 3]): nodes talk only within their group. */
  async partition (...groups) {
    if (groups.length === 0) throw new TypeError('partition takes one array of node ids per side')
    for (const g of groups) {
      if (!Array.isArray(g)) throw new TypeError('partition takes arrays of node ids: partition([1], [2, 3])')
      g.forEach((id) => args.nodeId(id))
    }
    await native(() => this._inner.partition(groups))
  }

  async heal () {
    await native(() => this._inner.heal())
  }

  /** Loss and delay on node-to-node and client links; setNetwork() restores a clean network. */
  async setNetwork (opts) {
    const o = args.options(opts)
    const dropRate = args.optionalNumber(o.dropRate, 'dropRate') ?? 0
    const delayMs = args.optionalNumber(o.delayMs, 'delayMs') ?? 0
    const jitterMs = args.optionalNumber(o.jitterMs, 'jitterMs') ?? 0
    await native(() => this._inner.setNetwork(dropRate, delayMs, jitterMs))
  }

  /** Adds a node; resolves its id. */
  async addNode () {
    return native(() => this._inner.addNode())
  }

  /** Moves a node's replicas away, then removes it: removeNode(id, { timeoutMs }) (or a number). */
  async removeNode (id, opts) {
    const n = args.nodeId(id)
    const t = typeof opts === 'number' ? args.optionalNumber(opts, 'timeoutMs') : args.timeout(args.options(opts))
    await native(() => this._inner.removeNode(n, t ?? 120_000))
  }

  /** Splits a shard online: split(shard, { at }) (at: a ring position, bigint); the new shard's id. */
  async split (shard, opts) {
    const s = args.count(shard, 'shard', 0)
    const at = args.position(args.options(opts).at)
    return await native(() => this._inner.split(s, at))
  }

  async setReplication (r) {
    const n = args.count(r, 'replication', 1)
    await native(() => this._inner.setReplication(n))
  }

  async status () {
    return statusOf(await native(() => this._inner.status()))
  }

  async events () {
    return eventsOf(await native(() => this._inner.events()))
  }

  async waitForLeaders (timeoutMs = 10_000) {
    const t = args.optionalNumber(timeoutMs, 'timeoutMs')
    await native(() => this._inner.waitForLeaders(t))
  }

  /** No pending move, every shard at R and uniform, replicas balanced. */
  async waitUntilSettled (timeoutMs = 60_000) {
    const t = args.optionalNumber(timeoutMs, 'timeoutMs')
    await native(() => this._inner.waitUntilSettled(t))
  }

  /** Serves the cluster over gRPC (every node on its own port); resolves node 1's address. */
  async serve (address = '127.0.0.1:0') {
    if (typeof address !== 'string') throw new TypeError("address must be a string like '127.0.0.1:0'")
    return native(() => this._inner.serve(address))
  }

  /** Every client of this cluster, whenever created, records while `fn` runs. */
  async record (fn) {
    if (typeof fn !== 'function') throw new TypeError('record takes an async function')
    return recording(() => this._inner.startRecording(), () => this._inner.stopRecording(), fn)
  }

  /** Load generated and measured in Rust; `await run.stop()` for its report. */
  startLoad (opts) {
    const o = args.options(opts)
    const load = {
      writers: args.optionalCount(o.writers, 'writers'),
      readRatio: args.optionalNumber(o.readRatio, 'readRatio'),
      consistency: args.consistency(o),
      keys: args.optionalCount(o.keys, 'keys', 1),
      valueSize: args.optionalCount(o.valueSize, 'valueSize'),
      seed: args.optionalCount(o.seed, 'seed'),
    }
    return new LoadRun(now(() => this._inner.startLoad(load)))
  }

  /** Stops every node and client; removes a temporary data dir. Safe to call twice. */
  async close () {
    await native(() => this._inner.close())
    if (this._temporaryDir) temporary.delete(this._temporaryDir)
  }
}

module.exports = { Cluster }
