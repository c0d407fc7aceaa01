// The client's every method, bad input, closed clients, many puts at once, and an event loop
// that stays free while they run.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import scalestore from '../index.js'

const { Cluster, ScaleStoreError } = scalestore
let cluster
let kv

before(async () => {
  cluster = await Cluster.start({ nodes: 3, shards: 4 })
  await cluster.waitForLeaders(30_000)
  kv = cluster.client()
})
after(async () => {
  await cluster.close()
})

test('put, get, delete, append and cas do what they say', async () => {
  await kv.put('greeting', 'hello')
  assert.deepEqual(await kv.get('greeting'), Buffer.from('hello'))
  assert.deepEqual(await kv.get(Buffer.from('greeting'), { consistency: 'lease' }), Buffer.from('hello'))
  assert.deepEqual(await kv.get(new Uint8Array(Buffer.from('greeting')), { consistency: 'stale' }), Buffer.from('hello'))
  assert.equal(await kv.append('greeting', ', world'), 12)
  assert.equal(await kv.cas('greeting', 'hello, world', 'bye'), true)
  assert.equal(await kv.cas('greeting', 'hello, world', 'again'), false)
  assert.deepEqual(await kv.get('greeting'), Buffer.from('bye'))
  assert.equal(await kv.cas('fresh', null, 'made'), true)
  assert.equal(await kv.cas('fresh', null, 'twice'), false)
  assert.equal(await kv.delete('greeting'), true)
  assert.equal(await kv.delete('greeting'), false)
  assert.equal(await kv.get('greeting'), null)
  await kv.put('binary', Buffer.from([0, 255, 1]))
  assert.deepEqual(await kv.get('binary'), Buffer.from([0, 255, 1]))
})

test('scan is in key order, end exclusive, with prefix and limit; scanIter pages through it', async () => {
  const entries = {}
  for (let i = 0; i < 50; i++) entries[`s-${String(i).padStart(3, '0')}`] = String(i)
  await kv.putMany(entries)
  await kv.put('sz', 'outside the prefix')
  const all = await kv.scan({ prefix: 's-' })
  assert.deepEqual(all.map(([k]) => k.toString()), Object.keys(entries))
  assert.deepEqual(all[7], [Buffer.from('s-007'), Buffer.from('7')])
  assert.deepEqual((await kv.scan({ start: 's-010', end: 's-013' })).map(([k]) => k.toString()), ['s-010', 's-011', 's-012'])
  assert.equal((await kv.scan({ prefix: 's-', limit: 5 })).length, 5)
  assert.deepEqual(await kv.scan({ prefix: 's-', limit: 0 }), [])
  const paged = []
  for await (const pair of kv.scanIter({ prefix: 's-', pageSize: 7 })) paged.push(pair)
  assert.deepEqual(paged, all)
  assert.deepEqual(await kv.scan({ prefix: 'no-such-prefix' }), [])
})

test('getMany keeps the order of keys; putMany takes objects, Maps and pairs', async () => {
  await kv.putMany([['m-1', 'one'], [Buffer.from('m-2'), Buffer.from('two')]])
  await kv.putMany(new Map([['m-3', 'three']]))
  assert.deepEqual(await kv.getMany(['m-3', 'm-missing', 'm-1', Buffer.from('m-2')]),
    [Buffer.from('three'), null, Buffer.from('one'), Buffer.from('two')])
  assert.deepEqual(await kv.getMany([]), [])
})

test('status and events have the documented shape', async () => {
  for (const status of [await cluster.status(), await kv.status()]) {
    assert.deepEqual(status.nodes.map((n) => n.id).sort(), [1, 2, 3])
    for (const n of status.nodes) assert.equal(n.alive, true)
    assert.deepEqual(status.shards.map((s) => s.id), [0, 1, 2, 3])
    for (const s of status.shards) {
      for (const field of ['leader', 'replicas', 'term', 'commitIndex', 'appliedIndex', 'size']) assert.ok(field in s, field)
      assert.equal(s.replicas.length, 3)
      assert.ok(s.appliedIndex <= s.commitIndex)
    }
  }
  const events = await kv.events()
  assert.ok(events.length > 0)
  for (const e of events) {
    assert.equal(typeof e.time, 'number')
    assert.ok(e.time > 1.6e12, 'time is in milliseconds since the epoch')
    assert.equal(typeof e.kind, 'string')
  }
  // Leader changes are recorded by each node's watcher, within a tick (50 ms) of the election:
  // possibly after waitForLeaders resolved.
  const deadline = Date.now() + 5_000
  while (!(await cluster.events()).some((e) => e.kind === 'leader_changed')) {
    assert.ok(Date.now() < deadline, 'a leader_changed event within 5 s')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
})

test('wrong types reject with TypeError (never a synchronous throw) and write nothing', async () => {
  const calls = [
    () => kv.put(3, 'x'),
    () => kv.put('bad-type', 3),
    () => kv.put('bad-type', null),
    () => kv.get({}),
    () => kv.get('bad-type', 'linearizable'),
    () => kv.get('bad-type', { consistency: 1 }),
    () => kv.put('bad-type', 'x', { timeoutMs: '5' }),
    () => kv.cas('bad-type', 3, 'x'),
    () => kv.getMany('not-an-array'),
    () => kv.putMany('nope'),
    () => kv.putMany([['only-key']]),
    () => kv.putMany([['bad-type', 'ok'], ['k2', 7]]),
    () => kv.scan({ limit: '3' }),
    () => cluster.stopNode('1'),
    () => cluster.setNetwork({ dropRate: '0.5' }),
  ]
  for (const call of calls) {
    let promise
    assert.doesNotThrow(() => { promise = call() }, 'no synchronous throw')
    assert.ok(promise instanceof Promise)
    await assert.rejects(promise, TypeError)
  }
  assert.equal(await kv.get('bad-type'), null)
})

test('bad values reject with INVALID_ARGUMENT and write nothing', async () => {
  const invalid = (e) => e instanceof ScaleStoreError && e.code === 'INVALID_ARGUMENT'
  await assert.rejects(kv.put('k'.repeat(5000), 'x'), invalid)
  await assert.rejects(kv.put('big-value', Buffer.alloc(2 * 1024 * 1024)), invalid)
  await assert.rejects(kv.put('', 'x'), invalid)
  await assert.rejects(kv.get('big-value', { consistency: 'sometimes' }), invalid)
  await assert.rejects(kv.put('big-value', 'x', { timeoutMs: -1 }), invalid)
  const many = []
  for (let i = 0; i < 12_000; i++) many.push([`atomic-${i}`, 'v'])
  many.push(['x'.repeat(5000), 'v'])
  await assert.rejects(kv.putMany(many), invalid)
  assert.deepEqual(await kv.scan({ prefix: 'atomic-', limit: 1 }), [])
  assert.equal(await kv.get('big-value'), null)
  await assert.rejects(cluster.stopNode(99), invalid)
  await assert.rejects(cluster.partition([1], [99]), invalid)
  assert.throws(() => cluster.client({ node: 42 }), invalid)
})

test('a closed client rejects with CLOSED', async () => {
  const c = cluster.client()
  await c.put('closing', 'v')
  await c.close()
  await c.close()
  assert.equal(c.closed, true)
  await assert.rejects(c.get('closing'), (e) => e instanceof ScaleStoreError && e.code === 'CLOSED')
  await assert.rejects(c.put('closing', 'w'), (e) => e.code === 'CLOSED')
  assert.deepEqual(await kv.get('closing'), Buffer.from('v'))
})

test('Promise.all of 1000 puts writes all of them while the event loop stays free', async () => {
  const delay = monitorEventLoopDelay({ resolution: 5 })
  delay.enable()
  const puts = []
  for (let i = 0; i < 1000; i++) puts.push(kv.put(`p-${String(i).padStart(4, '0')}`, String(i)))
  await Promise.all(puts)
  delay.disable()
  const got = await kv.scan({ prefix: 'p-' })
  assert.equal(got.length, 1000)
  assert.deepEqual(got[123], [Buffer.from('p-0123'), Buffer.from('123')])
  const p99ms = delay.percentile(99) / 1e6
  assert.ok(p99ms < 50, `event loop delay p99 ${p99ms.toFixed(1)} ms`)
})

test('a client records its own operations into a history that checks linearizable', async () => {
  const history = await kv.record(async () => {
    await kv.put('rec', 'a')
    await kv.append('rec', 'b')
    assert.deepEqual(await kv.get('rec'), Buffer.from('ab'))
  })
  assert.equal(history.length, 3)
  const ops = history.operations()
  assert.equal(ops.length, 3)
  assert.ok(ops.every((op) => typeof op === 'object'))
  const back = scalestore.History.fromJsonl(history.toJsonl())
  assert.equal(back.length, 3)
  const result = await scalestore.checkLinearizable(history)
  assert.equal(result.ok, true)
  assert.equal(result.verdict, 'linearizable')
  assert.equal(result.counterexample, null)
  await assert.rejects(scalestore.checkLinearizable('not a history'), TypeError)
})

test('a client with an encoding returns strings for values and scanned keys; null stays null', async () => {
  const text = cluster.client({ encoding: 'utf8' })
  assert.equal(text.encoding, 'utf8')
  await text.put('enc-a', 'héllo')
  await text.put(Buffer.from('enc-b'), Buffer.from('wörld'))
  assert.equal(await text.get('enc-a'), 'héllo')
  assert.equal(await text.get('enc-missing'), null)
  assert.deepEqual(await text.getMany(['enc-a', 'enc-missing', 'enc-b']), ['héllo', null, 'wörld'])
  assert.deepEqual(await text.scan({ prefix: 'enc-' }), [['enc-a', 'héllo'], ['enc-b', 'wörld']])
  const paged = []
  for await (const pair of text.scanIter({ prefix: 'enc-', pageSize: 1 })) paged.push(pair)
  assert.deepEqual(paged, [['enc-a', 'héllo'], ['enc-b', 'wörld']])
  // Per call: an encoding for one read, or Buffers from a client that decodes.
  assert.deepEqual(await text.get('enc-a', { encoding: null }), Buffer.from('héllo'))
  assert.equal(await kv.get('enc-a', { encoding: 'hex' }), Buffer.from('héllo').toString('hex'))
  assert.deepEqual(await kv.get('enc-a'), Buffer.from('héllo'), 'Buffers stay the default')
  assert.equal(kv.encoding, null)
  assert.throws(() => cluster.client({ encoding: 'klingon' }), (e) => e instanceof ScaleStoreError && e.code === 'INVALID_ARGUMENT')
  await assert.rejects(kv.get('enc-a', { encoding: 7 }), TypeError)
})

test('cas can resolve the current value, so a read-modify-write loop needs no get', async () => {
  await kv.put('rmw', '1')
  assert.deepEqual(await kv.cas('rmw', '0', '5', { returnCurrent: true }), { success: false, current: Buffer.from('1') })
  assert.deepEqual(await kv.cas('rmw-absent', 'x', '5', { returnCurrent: true }), { success: false, current: null })
  const text = cluster.client({ encoding: 'utf8' })
  let seen = null
  for (let i = 0; i < 3; i++) {
    const { success, current } = await text.cas('rmw', seen, String(Number(seen ?? '0') + 1), { returnCurrent: true })
    if (success) break
    seen = current
  }
  assert.equal(await text.get('rmw'), '2')
  assert.equal(await kv.cas('rmw', '2', '3'), true)
  await assert.rejects(kv.cas('rmw', '3', '4', { returnCurrent: 'yes' }), TypeError)
  assert.equal(await text.get('rmw'), '3', 'a bad option writes nothing')
})

test('new Client() fails at once and points to connect', () => {
  assert.throws(() => new scalestore.Client(), /connect/)
})

test('deletePrefix deletes every matching key and resolves how many', async () => {
  await kv.putMany(Object.fromEntries(Array.from({ length: 120 }, (_, i) => [`dp/${String(i).padStart(3, '0')}`, 'x'])))
  await kv.put('dp-kept', 'y')
  assert.equal(await kv.deletePrefix('dp/'), 120)
  assert.deepEqual(await kv.scan({ prefix: 'dp/' }), [])
  assert.deepEqual(await kv.get('dp-kept'), Buffer.from('y'))
  assert.equal(await kv.deletePrefix(Buffer.from('dp/')), 0)
  await assert.rejects(kv.deletePrefix(3), TypeError)
  await assert.rejects(kv.deletePrefix('p'.repeat(100_000)), (e) => e instanceof ScaleStoreError && e.code === 'INVALID_ARGUMENT')
  assert.deepEqual(await kv.get('dp-kept'), Buffer.from('y'), 'bad input deletes nothing')
})

test('errors keep the core kind beside the code, as Python does', async () => {
  await assert.rejects(cluster.stopNode(99), (e) => e instanceof ScaleStoreError && e.code === 'INVALID_ARGUMENT' && e.kind === 'unknown_node')
  await assert.rejects(kv.put('', 'x'), (e) => e.code === 'INVALID_ARGUMENT' && e.kind === 'invalid_argument')
  const closedClient = cluster.client()
  await closedClient.close()
  await assert.rejects(closedClient.get('k'), (e) => e.code === 'CLOSED' && e.kind === 'closed')
  assert.equal(new ScaleStoreError('TIMEOUT', 'made here').kind, 'timeout')
})
