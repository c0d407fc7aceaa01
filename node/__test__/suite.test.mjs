// runSuite: the Rust fault suite, one call.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import scalestore from '../index.js'

const { runSuite, NEMESES, checkLinearizable } = scalestore

test('NEMESES lists the kebab-case names', () => {
  assert.ok(NEMESES.includes('crash-all'))
  assert.ok(NEMESES.length >= 10)
  for (const n of NEMESES) assert.match(n, /^[a-z]+(-[a-z]+)*$/)
})

test('runSuite passes for crash-all and its history checks linearizable', async () => {
  const report = await runSuite({ nemesis: 'crash-all', seed: 7, seconds: 3 })
  assert.equal(report.passed, true, report.summary)
  assert.equal(report.verdict, 'linearizable')
  assert.ok(report.operations > 50)
  assert.equal(report.lost, 0)
  assert.equal(report.duplicated, 0)
  assert.deepEqual(report.lostAppends, [])
  assert.ok(report.recoveryMs === null || report.recoveryMs >= 0)
  assert.equal(report.history.length, report.operations)
  assert.equal((await checkLinearizable(report.history)).ok, true)
})

test('an unknown nemesis rejects with INVALID_ARGUMENT', async () => {
  await assert.rejects(runSuite({ nemesis: 'gremlins' }), (e) => e.code === 'INVALID_ARGUMENT')
  await assert.rejects(runSuite({ nemesis: 3 }), TypeError)
  await assert.rejects(runSuite(), TypeError)
})
