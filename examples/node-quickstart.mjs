// ScaleStore from Node: start a cluster, write and read, stop a shard leader, read again,
// check the recorded history. Run: node examples/node-quickstart.mjs (after npm install ./node)
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { Cluster, checkLinearizable } = require(process.env.SCALESTORE_NODE_PACKAGE || 'scalestore')

const cluster = await Cluster.start({ nodes: 3, shards: 4 })
await cluster.waitForLeaders()
const kv = cluster.client()
const history = await cluster.record(async () => {
  await kv.put('greeting', 'hello')
  await kv.append('greeting', ', world')
  const victim = await cluster.leaderOf(cluster.shardOf('greeting'))
  await cluster.stopNode(victim)
  console.log(`stopped node ${victim}; read:`, (await kv.get('greeting')).toString())
  await cluster.startNode(victim)
})
console.log('status:', (await cluster.status()).shards.map((s) => `shard ${s.id} led by ${s.leader}`).join(', '))
const result = await checkLinearizable(history)
console.log(`${history.length} operations recorded: ${result.verdict}`)
await cluster.close()
if (!result.ok) process.exit(1)
