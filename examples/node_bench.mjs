// What the Node binding costs: put/get throughput from Node (1 and N in flight) next to the
// Rust client (the core's load generator) on the same embedded cluster. Not part of CI.
//   node examples/node_bench.mjs [seconds=5] [inFlight=64]     (after npm install ./node)
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { Cluster } = require(process.env.SCALESTORE_NODE_PACKAGE || '../node/index.js')

const seconds = Number(process.argv[2] ?? 5)
const inFlight = Number(process.argv[3] ?? 64)
const KEYS = 10_000
const VALUE = Buffer.alloc(100, 'x')
const key = (i) => `bench-${String(i % KEYS).padStart(8, '0')}`
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function quantile (sorted, q) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN
}

async function fromNode (kv, workers, read) {
  const latencies = []
  const deadline = performance.now() + seconds * 1000
  const started = performance.now()
  await Promise.all(Array.from({ length: workers }, async (_, n) => {
    let i = n * 1000
    while (performance.now() < deadline) {
      const t0 = performance.now()
      if (read) await kv.get(key(i))
      else await kv.put(key(i), VALUE)
      latencies.push(performance.now() - t0)
      i += 7919
    }
  }))
  const elapsed = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  return { opsPerS: latencies.length / elapsed, p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99) }
}

const cluster = await Cluster.start({ nodes: 3, shards: 8 })
await cluster.waitForLeaders(60_000)
const kv = cluster.client()
const entries = []
for (let i = 0; i < KEYS; i++) entries.push([key(i), VALUE])
await kv.putMany(entries)
for (const read of [false, true]) {
  const what = read ? 'get' : 'put'
  const rows = []
  for (const writers of [1, inFlight]) {
    const run = cluster.startLoad({ writers, readRatio: read ? 1 : 0, keys: KEYS, valueSize: VALUE.length })
    await sleep(seconds * 1000)
    const r = await run.stop()
    rows.push([`Rust client, ${writers} in flight`, r.opsPerS, r.p50Ms, r.p99Ms])
  }
  for (const workers of [1, inFlight]) {
    const r = await fromNode(kv, workers, read)
    rows.push([`Node, ${workers} in flight`, r.opsPerS, r.p50, r.p99])
  }
  for (const [label, ops, p50, p99] of rows) {
    console.log(`${what}  ${label.padEnd(28)} ${Math.round(ops).toLocaleString('en-US').padStart(9)} ops/s  p50 ${p50.toFixed(2)} ms  p99 ${p99.toFixed(2)} ms`)
  }
}
console.log(`\n3 nodes, 8 shards, fsync on, 100 B values, ${KEYS} keys, ${seconds} s each; gets are linearizable`)
await cluster.close()
