// The embedded cluster: faults, persistence, membership, load, recording.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import scalestore from '../index.js'
import { eventually } from './helpers.mjs'

const { Cluster, ScaleStoreError, checkLinearizable } = scalestore

test('data survives stopNode/startNode, and a kept dataDir reopens with its data', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'scalestore-node-dir-'))
  try {
    let cluster = await Cluster.start({ nodes: 3, shards: 2, dataDir: dir, seed: 7 })
    assert.deepEqual(cluster.nodeIds, [1, 2, 3])
    assert.equal(cluster.dataDir, dir)
    assert.equal(cluster.seed, 7)
    await cluster.waitForLeaders(30_000)
    const kv = cluster.client()
    await kv.put('survivor', 'before')
    const shard = cluster.shardOf('survivor')
    assert.ok(shard === 0 || shard === 1)
    const leader = await cluster.leaderOf(shard)
    assert.ok([1, 2, 3].includes(leader))
    await cluster.stopNode(leader)
    assert.deepEqual(cluster.nodeIds, [1, 2, 3], 'stopped members are still members')
    assert.deepEqual(await kv.get('survivor'), Buffer.from('before'))
    await kv.put('survivor', 'during')
    await cluster.startNode(leader)
    await cluster.waitForLeaders(30_000)
    await eventually(async () => {
      const pinned = cluster.client({ node: leader })
      const v = await pinned.get('survivor', { consistency: 'stale' })
      return v !== null && v.toString() === 'during'
    })
    const events = await cluster.events()
    assert.ok(events.some((e) => e.kind === 'node_stopped'))
    assert.ok(events.some((e) => e.kind === 'node_started'))
    await cluster.close()
    await cluster.close()
    await assert.rejects(kv.get('survivor'), (e) => e.code === 'CLOSED')
    await assert.rejects(cluster.status(), (e) => e.code === 'CLOSED')

    await assert.rejects(Cluster.start({ dataDir: dir, shards: 5 }), (e) => e instanceof ScaleStoreError && e.code === 'INVALID_ARGUMENT')
    cluster = await Cluster.start({ dataDir: dir })
    assert.deepEqual(cluster.nodeIds, [1, 2, 3])
    await cluster.waitForLeaders(30_000)
    assert.deepEqual(await cluster.client().get('survivor'), Buffer.from('during'))
    await assert.rejects(Cluster.start({ dataDir: dir }), (e) => e.code === 'DATA_DIR')
    await cluster.close()
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a foreign data dir is refused with DATA_DIR and left untouched', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'scalestore-node-foreign-'))
  try {
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine')
    await assert.rejects(Cluster.start({ dataDir: dir }), (e) => e instanceof ScaleStoreError && e.code === 'DATA_DIR')
    assert.deepEqual(fs.readdirSync(dir), ['notes.txt'])
    assert.equal(fs.readFileSync(path.join(dir, 'notes.txt'), 'utf8'), 'mine')
    fs.writeFileSync(path.join(dir, 'scalestore-cluster.json'), 'not json at all')
    await assert.rejects(Cluster.start({ dataDir: dir }), (e) => e.code === 'DATA_DIR')
    assert.deepEqual(fs.readdirSync(dir).sort(), ['notes.txt', 'scalestore-cluster.json'])
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a client pinned to a partitioned minority node refuses linearizable reads but reads stale', async () => {
  const cluster = await Cluster.start({ nodes: 3, shards: 1 })
  try {
    await cluster.waitForLeaders(30_000)
    const kv = cluster.client()
    await kv.put('k', 'v1')
    const minority = 3
    const pinned = cluster.client({ node: minority })
    assert.equal(pinned.node, minority)
    await eventually(async () => (await pinned.get('k', { consistency: 'stale' }))?.toString() === 'v1')
    await cluster.partition([1, 2], [minority])
    await eventually(async () => (await cluster.leaderOf(0)) !== minority, 30_000)
    await assert.rejects(pinned.get('k', { timeoutMs: 2000 }), (e) => e instanceof ScaleStoreError && ['UNAVAILABLE', 'TIMEOUT'].includes(e.code))
    assert.deepEqual(await pinned.get('k', { consistency: 'stale' }), Buffer.from('v1'))
    await kv.put('k', 'v2')
    assert.deepEqual(await pinned.get('k', { consistency: 'stale' }), Buffer.from('v1'), 'the minority has not seen v2')
    await cluster.heal()
    await eventually(async () => (await pinned.get('k'))?.toString() === 'v2', 30_000)
  } finally {
    await cluster.close()
  }
})

test('setNetwork loss and delay slow calls down but lose nothing', async () => {
  const cluster = await Cluster.start({ nodes: 3, shards: 2 })
  try {
    await cluster.waitForLeaders(30_000)
    const kv = cluster.client()
    await cluster.setNetwork({ dropRate: 0.1, delayMs: 5, jitterMs: 5 })
    for (let i = 0; i < 20; i++) await kv.append('lossy', String(i % 10))
    await cluster.setNetwork()
    assert.equal((await kv.get('lossy')).toString(), '01234567890123456789')
    await assert.rejects(cluster.setNetwork({ dropRate: 2 }), (e) => e.code === 'INVALID_ARGUMENT')
  } finally {
    await cluster.close()
  }
})

test('addNode, setReplication and removeNode move replicas and keep the data', async () => {
  const cluster = await Cluster.start({ nodes: 3, shards: 4, replication: 3 })
  try {
    await cluster.waitForLeaders(30_000)
    const kv = cluster.client()
    const entries = {}
    for (let i = 0; i < 100; i++) entries[`move-${i}`] = String(i)
    await kv.putMany(entries)
    const added = await cluster.addNode()
    assert.equal(added, 4)
    assert.deepEqual(cluster.nodeIds, [1, 2, 3, 4])
    await cluster.waitUntilSettled(120_000)
    let status = await cluster.status()
    assert.ok(status.nodes.find((n) => n.id === 4).shards > 0, 'the new node hosts replicas')
    await cluster.setReplication(2)
    await cluster.waitUntilSettled(120_000)
    status = await cluster.status()
    assert.ok(status.shards.every((s) => s.replicas.length === 2))
    await cluster.removeNode(1, { timeoutMs: 120_000 })
    assert.deepEqual(cluster.nodeIds, [2, 3, 4])
    await cluster.waitUntilSettled(120_000)
    status = await cluster.status()
    assert.ok(status.shards.every((s) => !s.replicas.includes(1)))
    const got = await kv.scan({ prefix: 'move-' })
    assert.equal(got.length, 100)
    assert.deepEqual(await kv.get('move-42'), Buffer.from('42'))
    const kinds = new Set((await cluster.events()).map((e) => e.kind))
    assert.ok(kinds.has('move_started') && kinds.has('move_finished'))
  } finally {
    await cluster.close()
  }
})

test('record captures every client of the cluster, and the history checks linearizable', async () => {
  const cluster = await Cluster.start({ nodes: 3, shards: 2 })
  try {
    await cluster.waitForLeaders(30_000)
    const early = cluster.client()
    const history = await cluster.record(async () => {
      const late = cluster.client()
      await Promise.all([early.put('r', 'a'), late.append('r2', 'x')])
      await late.get('r')
      await early.cas('r', 'a', 'b')
    })
    assert.equal(history.length, 4)
    await early.put('after', 'not recorded')
    assert.equal(history.length, 4)
    const result = await checkLinearizable(history)
    assert.equal(result.ok, true)
  } finally {
    await cluster.close()
  }
})

test("startLoad's timeline shows the dip when a shard leader is stopped", async () => {
  const cluster = await Cluster.start({ nodes: 3, shards: 1 })
  try {
    await cluster.waitForLeaders(30_000)
    const run = cluster.startLoad({ writers: 8, readRatio: 0, keys: 100, valueSize: 50 })
    await new Promise((resolve) => setTimeout(resolve, 1500))
    assert.ok(run.running)
    await cluster.stopNode(await cluster.leaderOf(0))
    await new Promise((resolve) => setTimeout(resolve, 3500))
    const report = await run.stop()
    await assert.rejects(run.stop(), (e) => e.code === 'CLOSED')
    assert.ok(report.opsPerS > 0)
    assert.ok(report.p99Ms >= report.p50Ms)
    assert.ok(report.timeline.length >= 40)
    const before = report.timeline.filter((r) => r.t >= 0.5 && r.t < 1.4).map((r) => r.ops)
    const after = report.timeline.slice(15).map((r) => r.ops)
    assert.ok(Math.min(...before) > 0, 'steady before the stop')
    assert.ok(Math.min(...after) < Math.min(...before) / 4, 'a dip after the stop')
    assert.ok(report.timeline.slice(-5).some((r) => r.ops > 0), 'recovered by the end')
  } finally {
    await cluster.close()
  }
})

test('split divides a shard online and every key stays readable; bad splits reject and change nothing', async () => {
  const cluster = await Cluster.start({ nodes: 3, shards: 1 })
  try {
    await cluster.waitForLeaders(30_000)
    const kv = cluster.client()
    const entries = Array.from({ length: 150 }, (_, i) => [`k${i}`, `v${i}`])
    await kv.putMany(entries)
    assert.equal(await cluster.split(0), 1)
    assert.equal(await kv.split(0, { at: 2n ** 62n }), 2)
    assert.equal((await cluster.status()).shards.length, 3)
    const got = await kv.getMany(entries.map(([k]) => k))
    assert.deepEqual(got, entries.map(([, v]) => Buffer.from(v)))
    await assert.rejects(cluster.split(9), (e) => e instanceof ScaleStoreError && e.code === 'INVALID_ARGUMENT')
    await assert.rejects(cluster.split(0, { at: 0 }), (e) => e.code === 'INVALID_ARGUMENT')
    await assert.rejects(cluster.split(0, { at: 2n ** 64n }), (e) => e.code === 'INVALID_ARGUMENT')
    await assert.rejects(cluster.split('0'), TypeError)
    assert.equal((await cluster.status()).shards.length, 3, 'nothing changed')
  } finally {
    await cluster.close()
  }
})
