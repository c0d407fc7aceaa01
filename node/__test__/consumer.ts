// A TypeScript consumer that uses every call; `npm run typecheck` compiles it with
// `tsc --noEmit --strict` (run by scripts/test.sh). Never executed.
import {
  Cluster, Client, connect, checkLinearizable, runSuite, NEMESES, ScaleStoreError, History,
  type Status, type ClusterEvent, type LoadReport, type SuiteReport, type CheckResult, type ErrorCode,
} from '../index.js'

async function everything (): Promise<void> {
  const cluster: Cluster = await Cluster.start({ nodes: 3, shards: 8, replication: 3, dataDir: '/tmp/x', seed: 1 })
  const kv: Client = cluster.client()
  const pinned: Client = cluster.client({ node: 2 })
  await kv.put('k', 'v')
  await kv.put(Buffer.from('k'), new Uint8Array([1, 2]), { timeoutMs: 1000 })
  const v: Buffer | null = await kv.get('k', { consistency: 'linearizable' })
  const stale: Buffer | null = await pinned.get('k', { consistency: 'stale', timeoutMs: 500 })
  const existed: boolean = await kv.delete('k')
  const length: number = await kv.append('k', 'more')
  const swapped: boolean = await kv.cas('k', null, 'next')
  const pairs: Array<[Buffer, Buffer]> = await kv.scan({ start: 'a', end: 'z', prefix: 'k', limit: 10, consistency: 'lease' })
  for await (const [key, value] of kv.scanIter({ prefix: 'k' })) console.log(key.length + value.length)
  const many: Array<Buffer | null> = await kv.getMany(['a', 'b'], { consistency: 'stale' })
  await kv.putMany({ a: '1' })
  await kv.putMany(new Map([['a', '1']]))
  await kv.putMany([['a', '1'], [Buffer.from('b'), '2']])
  const status: Status = await kv.status()
  const events: ClusterEvent[] = await kv.events()
  const mine: History = await kv.record(async () => { await kv.get('k') })
  const deleted: number = await kv.deletePrefix('k', { timeoutMs: 1000 })
  const outcome: { success: boolean, current: Buffer | null } = await kv.cas('k', 'a', 'b', { returnCurrent: true })
  const text: Client<string> = cluster.client({ encoding: 'utf8' })
  const s: string | null = await text.get('k')
  const textPairs: Array<[string, string]> = await text.scan({ prefix: 'k' })
  const textOutcome: { success: boolean, current: string | null } = await text.cas('k', null, 'v', { returnCurrent: true })
  const encoding: BufferEncoding | null = text.encoding
  const remoteText: Client<string> = await connect('127.0.0.1:7001', { encoding: 'utf8' })
  console.log(deleted, outcome, s, textPairs, textOutcome, encoding, remoteText)
  await kv.close()

  const ids: number[] = cluster.nodeIds
  const shard: number = cluster.shardOf('k')
  const leader: number | null = await cluster.leaderOf(shard)
  await cluster.stopNode(1)
  await cluster.startNode(1)
  await cluster.partition([1], [2, 3])
  await cluster.heal()
  await cluster.setNetwork({ dropRate: 0.1, delayMs: 5, jitterMs: 1 })
  const added: number = await cluster.addNode()
  await cluster.removeNode(added)
  await cluster.setReplication(3)
  const s2: Status = await cluster.status()
  const e2: ClusterEvent[] = await cluster.events()
  await cluster.waitForLeaders(10_000)
  await cluster.waitUntilSettled(60_000)
  const address: string = await cluster.serve('127.0.0.1:0')
  const history: History = await cluster.record(async () => { await kv.put('a', 'b') })
  const check: CheckResult = await checkLinearizable(history)
  const ok: boolean = check.ok
  const run = cluster.startLoad({ writers: 16, readRatio: 0 })
  const load: LoadReport = await run.stop()
  const firstT: number | undefined = load.timeline[0]?.t
  const suite: SuiteReport = await runSuite({ nemesis: NEMESES[0] ?? 'crash-all', seed: 7, seconds: 5 })
  const recovery: number | null = suite.recoveryMs
  await cluster.close()

  const remote: Client = await connect(['127.0.0.1:7001'], { timeoutMs: 5000, tls: { ca: 'pem', cert: Buffer.from('pem'), key: 'pem' } })
  const remote2: Client = await connect('127.0.0.1:7001,127.0.0.1:7002')
  const behindNat: Client<string> = await connect('127.0.0.1:17001', {
    encoding: 'utf8',
    addressMap: { '10.0.0.5:7001': '127.0.0.1:17001' },
    tls: { ca: 'pem', serverName: 'db.internal' },
    backoffInitialMs: 10,
    backoffMaxMs: 1000
  })
  try {
    await remote.get('k')
  } catch (e) {
    if (e instanceof ScaleStoreError) {
      const code: ErrorCode = e.code
      console.log(code, e.message)
    }
  }
  await remote2.close()
  await behindNat.close()
  console.log(v, stale, existed, length, swapped, pairs, many, status, events, mine.length, ids, leader, s2, e2,
    address, ok, firstT, recovery, history.operations(), history.toJsonl(), [...history].length)
}

void everything
