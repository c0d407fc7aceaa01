'use strict'
// A recorded history (core proof/history.rs): operations as objects with the fields of the
// core's JSON lines.

const addon = require('./native')
const { native, now } = require('./error')

class History {
  /** @param {any} inner a native history */
  constructor (inner) {
    this._inner = inner
  }

  /** A history read from JSON lines (as toJsonl() writes them). */
  static fromJsonl (text) {
    if (typeof text !== 'string') throw new TypeError('fromJsonl takes a string of JSON lines')
    return new History(now(() => addon.NativeHistory.fromJsonl(text)))
  }

  /** The number of operations recorded so far. */
  get length () {
    return this._inner.length
  }

  /** One JSON object per line, one line per operation, in completion order. */
  toJsonl () {
    return this._inner.toJsonl()
  }

  /** The operations as objects. */
  operations () {
    return this.toJsonl().split('\n').filter(Boolean).map((line) => JSON.parse(line))
  }

  [Symbol.iterator] () {
    return this.operations()[Symbol.iterator]()
  }

  toJSON () {
    return this.operations()
  }

  async check () {
    return native(() => this._inner.check())
  }
}

/** Runs `fn` with recording on (start/stop are native calls); a failure of `fn` wins over one
 * of stopping. Resolves the History. */
async function recording (start, stop, fn) {
  const history = new History(await native(start))
  let failed = true
  try {
    await fn()
    failed = false
  } finally {
    try {
      now(stop)
    } catch (e) {
      if (!failed) throw e
    }
  }
  return history
}

module.exports = { History, recording }
