// ScaleStore's client-only npm package against a running cluster (SCALESTORE_ENDPOINTS, e.g.
// from `scalestore dev`): write, read, scan, compare-and-swap. Run after npm install
// scalestore-client (scripts/package.sh builds it).
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { Cluster, connect, ScaleStoreError } = require(process.env.SCALESTORE_NODE_PACKAGE || 'scalestore-client')

const kv = await connect(undefined, { encoding: 'utf8' })
await kv.putMany(Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`client-${i}`, String(i)])))
await kv.append('client-0', '!')
console.log('read:', await kv.get('client-0'), 'scan:', (await kv.scan({ prefix: 'client-' })).length, 'keys')
const { success, current } = await kv.cas('client-1', '1', 'one', { returnCurrent: true })
console.log('cas:', success, current)
if ((await kv.get('client-0')) !== '0!' || current !== 'one') process.exit(1)
await kv.close()
try {
  await Cluster.start({ nodes: 1 })
  console.error('a client-only build started an embedded cluster')
  process.exit(1)
} catch (e) {
  if (!(e instanceof ScaleStoreError) || e.code !== 'UNSUPPORTED') throw e
  console.log('no embedded cluster in this build:', e.code)
}
