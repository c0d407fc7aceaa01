// connect(): against real scalestore-server processes and against cluster.serve().
import { test } from 'node:test'
import assert from 'node:assert/strict'
import scalestore from '../index.js'
import { eventually, freePort, startBehindNat, startServers } from './helpers.mjs'

const { Cluster, connect, ScaleStoreError } = scalestore

test('connect() talks to three scalestore-server processes', async () => {
  const servers = await startServers(4)
  try {
    const kv = await connect(servers.endpoints.join(','), { timeoutMs: 30_000 })
    await eventually(async () => { await kv.put('remote', 'hello'); return true }, 60_000)
    assert.deepEqual(await kv.get('remote'), Buffer.from('hello'))
    assert.equal(await kv.append('remote', '!'), 6)
    await kv.putMany({ 'r-1': 'a', 'r-2': 'b' })
    assert.deepEqual(await kv.getMany(['r-2', 'r-1', 'r-3']), [Buffer.from('b'), Buffer.from('a'), null])
    assert.deepEqual((await kv.scan({ prefix: 'r-' })).map(([k]) => k.toString()), ['r-1', 'r-2'])
    const status = await kv.status()
    assert.deepEqual(status.nodes.map((n) => n.id).sort(), [1, 2, 3])
    assert.equal(status.shards.length, 4)
    assert.ok(Array.isArray(await kv.events()))
    const second = await connect([servers.endpoints[2]])
    assert.deepEqual(await second.get('remote', { consistency: 'lease' }), Buffer.from('hello!'))
    await second.close()
    await kv.close()
    await assert.rejects(kv.get('remote'), (e) => e.code === 'CLOSED')
  } finally {
    await servers.stop()
  }
})

test('connect() reaches an embedded cluster served over gRPC', async () => {
  const cluster = await Cluster.start({ nodes: 3, shards: 2 })
  try {
    await cluster.waitForLeaders(30_000)
    await cluster.client().put('served', 'yes')
    const address = await cluster.serve('127.0.0.1:0')
    assert.match(address, /^127\.0\.0\.1:\d+$/)
    assert.equal(await cluster.serve('127.0.0.1:0'), address)
    const remote = await connect([address], { timeoutMs: 10_000 })
    assert.deepEqual(await remote.get('served'), Buffer.from('yes'))
    await remote.put('from-remote', '1')
    assert.deepEqual(await cluster.client().get('from-remote'), Buffer.from('1'))
    await remote.close()
  } finally {
    await cluster.close()
  }
})

test('an unreachable endpoint rejects with UNAVAILABLE; bad endpoints and TLS options are refused', async () => {
  const port = await freePort()
  await assert.rejects(connect(`127.0.0.1:${port}`, { timeoutMs: 1000 }),
    (e) => e instanceof ScaleStoreError && e.code === 'UNAVAILABLE' && e.message.includes(String(port)))
  await assert.rejects(connect(7001), TypeError)
  await assert.rejects(connect([]), (e) => e.code === 'INVALID_ARGUMENT')
  await assert.rejects(connect('127.0.0.1:1', { tls: { cert: 'x' } }), (e) => e.code === 'INVALID_ARGUMENT')
  await assert.rejects(connect('127.0.0.1:1', { tls: { ca: 42 } }), TypeError)
  await assert.rejects(connect('not an address'), (e) => e.code === 'INVALID_ARGUMENT')
})

test('connect() reads SCALESTORE_ENDPOINTS and refuses a tls.ca that is not PEM at once', async () => {
  const saved = process.env.SCALESTORE_ENDPOINTS
  try {
    delete process.env.SCALESTORE_ENDPOINTS
    await assert.rejects(connect(), (e) => e.code === 'INVALID_ARGUMENT' && e.message.includes('SCALESTORE_ENDPOINTS'))
    const port = await freePort()
    process.env.SCALESTORE_ENDPOINTS = `127.0.0.1:${port}`
    await assert.rejects(connect(undefined, { timeoutMs: 500 }), (e) => e.code === 'UNAVAILABLE' && e.message.includes(String(port)))
  } finally {
    if (saved === undefined) delete process.env.SCALESTORE_ENDPOINTS
    else process.env.SCALESTORE_ENDPOINTS = saved
  }
  // Refused before any dial: the message is the argument check's, not a transport error.
  await assert.rejects(connect('127.0.0.1:1', { timeoutMs: 10_000, tls: { ca: '/etc/scalestore/ca.pem' } }),
    (e) => e.code === 'INVALID_ARGUMENT' && e.message.includes('not PEM'))
})

test('dialing has its own timeout apart from the calls', async () => {
  const port = await freePort()
  const started = Date.now()
  await assert.rejects(connect(`127.0.0.1:${port}`, { timeoutMs: 60_000, connectTimeoutMs: 500 }), (e) => e.code === 'UNAVAILABLE')
  assert.ok(Date.now() - started < 30_000, 'the dial gave up at connectTimeoutMs, not at timeoutMs')
  await assert.rejects(connect('127.0.0.1:1', { connectTimeoutMs: '1' }), TypeError)
  await assert.rejects(connect('127.0.0.1:1', { attemptTimeoutMs: -1 }), (e) => e.code === 'INVALID_ARGUMENT')
})

test('an addressMap reaches nodes behind NAT, and without it the error names the option', async () => {
  const nat = await startBehindNat()
  const saved = process.env.SCALESTORE_ADDRESS_MAP
  delete process.env.SCALESTORE_ADDRESS_MAP
  try {
    // The seed endpoint answers; the address the node advertises does not.
    const lost = await eventually(() => connect(nat.reachable, { timeoutMs: 3000 }), 60_000)
    await assert.rejects(lost.put('k', 'v'), (e) => e instanceof ScaleStoreError && e.message.includes('addressMap') && e.message.includes(nat.advertised))
    await lost.close()
    const kv = await connect(nat.reachable, { timeoutMs: 10_000, addressMap: { [nat.advertised]: nat.reachable }, encoding: 'utf8' })
    await kv.putMany({ 'nat-1': 'a', 'nat-2': 'b' })
    assert.equal(await kv.get('nat-2'), 'b')
    assert.deepEqual((await kv.scan({ prefix: 'nat-' })).map(([k]) => k), ['nat-1', 'nat-2'])
    await kv.close()
    const viaMap = await connect(nat.reachable, { timeoutMs: 10_000, addressMap: new Map([[nat.advertised, nat.reachable]]) })
    assert.deepEqual(await viaMap.get('nat-1'), Buffer.from('a'))
    await viaMap.close()
    process.env.SCALESTORE_ADDRESS_MAP = `${nat.advertised}=${nat.reachable}`
    const viaEnv = await connect(nat.reachable, { timeoutMs: 10_000 })
    assert.deepEqual(await viaEnv.get('nat-1'), Buffer.from('a'))
    await viaEnv.close()
  } finally {
    if (saved === undefined) delete process.env.SCALESTORE_ADDRESS_MAP
    else process.env.SCALESTORE_ADDRESS_MAP = saved
    await nat.stop()
  }
})

test('address maps, TLS server names and back-offs are checked at once', async () => {
  await assert.rejects(connect('127.0.0.1:1', { timeoutMs: 500, addressMap: { 'no-port': '127.0.0.1:1' } }), (e) => e.code === 'INVALID_ARGUMENT')
  await assert.rejects(connect('127.0.0.1:1', { timeoutMs: 500, addressMap: [['10.0.0.1:7001', '127.0.0.1:1']] }), TypeError)
  await assert.rejects(connect('127.0.0.1:1', { timeoutMs: 500, addressMap: { '10.0.0.1:7001': 7001 } }), TypeError)
  await assert.rejects(connect('127.0.0.1:1', { timeoutMs: 500, backoffInitialMs: 300, backoffMaxMs: 100 }), (e) => e.code === 'INVALID_ARGUMENT' && /back-off/.test(e.message))
  await assert.rejects(connect('127.0.0.1:1', { timeoutMs: 500, tls: { ca: '-----BEGIN x', serverName: 3 } }), TypeError)
})
