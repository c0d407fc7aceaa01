'use strict'
// checkLinearizable (core proof/checker.rs): the search runs off the event loop.

const { History } = require('./history')

/**
 * @param {History} history
 * @returns {Promise<{ ok: boolean, verdict: string, counterexample: string | null }>}
 */
async function checkLinearizable (history) {
  if (!(history instanceof History)) {
    throw new TypeError('checkLinearizable takes a History (from cluster.record, client.record or runSuite)')
  }
  const r = await history.check()
  return { ok: r.ok, verdict: r.verdict, counterexample: r.counterexample ?? null }
}

module.exports = { checkLinearizable }
