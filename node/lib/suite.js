'use strict'
// runSuite (core proof/suite.rs): a fresh embedded cluster, a nemesis, a recorded workload,
// every check of the Rust fault suite.

const addon = require('./native')
const args = require('./args')
const { native, invalid, requireEmbedded } = require('./error')
const { History } = require('./history')

// Empty in a client-only build (no embedded cluster to run the suite on).
const NEMESES = Object.freeze(typeof addon.nemeses === 'function' ? addon.nemeses() : [])

async function runSuite (opts) {
  requireEmbedded(addon, 'runSuite()')
  const o = args.options(opts)
  if (typeof o.nemesis !== 'string') throw new TypeError(`nemesis must be a string, one of ${NEMESES.join(', ')}`)
  if (!NEMESES.includes(o.nemesis)) throw invalid(`unknown nemesis '${o.nemesis}'; one of ${NEMESES.join(', ')}`)
  const seed = args.optionalCount(o.seed, 'seed') ?? 1
  const seconds = args.optionalNumber(o.seconds, 'seconds') ?? 5
  if (seconds <= 0) throw invalid(`seconds must be positive, not ${seconds}`)
  const r = await native(() => addon.runSuite(o.nemesis, seed, seconds * 1000))
  return {
    passed: r.passed,
    verdict: r.verdict,
    operations: r.operations,
    lost: r.lost,
    duplicated: r.duplicated,
    lostAppends: r.lostAppends,
    duplicatedAppends: r.duplicatedAppends,
    recoveryMs: r.recoveryMs ?? null,
    nemesis: r.nemesis,
    seed: r.seed,
    acknowledged: r.acknowledged,
    unknown: r.unknown,
    counterexample: r.counterexample ?? null,
    snapshotsInstalled: r.snapshotsInstalled,
    placementProblems: r.placementProblems,
    summary: r.summary,
    history: History.fromJsonl(r.historyJsonl),
  }
}

module.exports = { runSuite, NEMESES }
