'use strict'
// Load generated and measured in Rust (core load.rs).

const { native } = require('./error')

class LoadRun {
  constructor (inner) {
    this._inner = inner
  }

  /** Seconds since the load started. */
  get elapsed () {
    return this._inner.elapsed
  }

  get running () {
    return this._inner.running
  }

  /** Stops the load; resolves its report (a second call rejects with CLOSED). */
  async stop () {
    const r = await native(() => this._inner.stop())
    return {
      opsPerS: r.opsPerS,
      p50Ms: r.p50Ms,
      p90Ms: r.p90Ms,
      p99Ms: r.p99Ms,
      p999Ms: r.p999Ms,
      errors: r.errors,
      operations: r.operations,
      seconds: r.seconds,
      timeline: r.timeline.map((row) => ({ t: row.t, ops: row.ops, p50Ms: row.p50Ms, p99Ms: row.p99Ms, errors: row.errors })),
    }
  }
}

module.exports = { LoadRun }
