// A process whose clusters and clients were closed exits on its own; one that forgot to close
// a cluster exits too (its nodes stop as in a crash) and its temporary dir is removed.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'

const index = fileURLToPath(new URL('../index.js', import.meta.url))

function runScript (body) {
  const script = `const s = require(${JSON.stringify(index)});\n(async () => {\n${body}\n})().catch((e) => { console.error(e); process.exit(3) })`
  return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 })
}

test('a process that closed its cluster and clients exits on its own', () => {
  const r = runScript(`
    const c = await s.Cluster.start({ nodes: 3, shards: 2 })
    await c.waitForLeaders(30000)
    const kv = c.client()
    await kv.put('k', 'v')
    await kv.close()
    await c.close()
    console.log('closed')`)
  assert.equal(r.error, undefined, 'exited before the timeout')
  assert.equal(r.status, 0, r.stderr)
  assert.match(r.stdout, /closed/)
})

test('a process that forgot to close its cluster still exits, and its temporary dir is removed', () => {
  const r = runScript(`
    const c = await s.Cluster.start({ nodes: 3, shards: 2 })
    await c.waitForLeaders(30000)
    await c.client().put('k', 'v')
    console.log(c.dataDir)`)
  assert.equal(r.error, undefined, 'exited before the timeout')
  assert.equal(r.status, 0, r.stderr)
  const dir = r.stdout.trim()
  assert.ok(dir.length > 0)
  assert.equal(fs.existsSync(dir), false, `${dir} removed at exit`)
})
