'use strict'
// Client (core routing/client.rs): the same type for an embedded cluster and a remote one.
// Every method returns a Promise and reports every failure, bad arguments included, as its
// rejection.

const args = require('./args')
const { native } = require('./error')
const { recording } = require('./history')

const PAGE = 1000

function pairs (page, enc) {
  return page.keys.map((k, i) => [decode(k, enc), decode(page.values[i], enc)])
}

/** A value as the caller asked for it: a Buffer, or a string in `enc`; null stays null. */
function decode (v, enc) {
  if (v === undefined || v === null) return null
  return enc ? v.toString(enc) : v
}

/** { nodes: [...], shards: [...] } with camelCase keys and null for "none". */
function statusOf (s) {
  return {
    nodes: s.nodes.map((n) => ({ id: n.id, alive: n.alive, shards: n.shards, leaders: n.leaders })),
    shards: s.shards.map((x) => ({
      id: x.id,
      leader: x.leader ?? null,
      replicas: x.replicas,
      term: x.term,
      commitIndex: x.commitIndex,
      appliedIndex: x.appliedIndex,
      size: x.size,
      joint: x.joint,
    })),
  }
}

function eventsOf (events) {
  return events.map((e) => ({ time: e.time, kind: e.kind, detail: e.detail }))
}

/** Entries of putMany: an object, a Map or an iterable of [key, value] pairs. */
function entriesOf (entries) {
  let list
  if (entries instanceof Map) list = [...entries.entries()]
  else if (Array.isArray(entries)) list = entries
  else if (entries !== null && typeof entries === 'object' && typeof entries[Symbol.iterator] === 'function') list = [...entries]
  else if (entries !== null && typeof entries === 'object') list = Object.entries(entries)
  else throw new TypeError(`entries must be an object, a Map or an array of [key, value] pairs, not ${args.typeName(entries)}`)
  const keys = []
  const values = []
  for (const pair of list) {
    if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError('each entry must be a [key, value] pair')
    keys.push(args.bytes(pair[0], 'key'))
    values.push(args.bytes(pair[1], 'value'))
  }
  return { keys, values }
}

function scanArgs (o) {
  return {
    start: args.optionalBytes(o.start, 'start'),
    end: args.optionalBytes(o.end, 'end'),
    prefix: args.optionalBytes(o.prefix, 'prefix'),
    consistency: args.consistency(o),
  }
}

class Client {
  /**
   * @param {any} inner a native client
   * @param {string} [encoding] values and scanned keys come back as strings in it
   */
  constructor (inner, encoding) {
    if (inner === undefined || inner === null || typeof inner !== 'object') {
      throw new TypeError("a Client is made by connect(endpoints) or cluster.client(), not new Client()")
    }
    this._inner = inner
    this._encoding = args.encoding(encoding) ?? null
  }

  /** What values and scanned keys are decoded with (null: they come back as Buffers). */
  get encoding () {
    return this._encoding
  }

  /** The encoding of one call: its own `encoding` option (null: Buffers), else the client's. */
  _enc (o) {
    return o.encoding === undefined ? this._encoding : args.encoding(o.encoding)
  }

  async put (key, value, opts) {
    const k = args.bytes(key, 'key')
    const v = args.bytes(value, 'value')
    const t = args.timeout(args.options(opts))
    await native(() => this._inner.put(k, v, t))
  }

  async get (key, opts) {
    const k = args.bytes(key, 'key')
    const o = args.options(opts)
    const c = args.consistency(o)
    const t = args.timeout(o)
    const enc = this._enc(o)
    return decode(await native(() => this._inner.get(k, c, t)), enc)
  }

  async delete (key, opts) {
    const k = args.bytes(key, 'key')
    const t = args.timeout(args.options(opts))
    return native(() => this._inner.delete(k, t))
  }

  /** Deletes every key starting with `prefix` ('' : every key); resolves how many. Atomic per shard, not across shards. */
  async deletePrefix (prefix, opts) {
    const p = args.bytes(prefix, 'prefix')
    const t = args.timeout(args.options(opts))
    return native(() => this._inner.deletePrefix(p, t))
  }

  async append (key, value, opts) {
    const k = args.bytes(key, 'key')
    const v = args.bytes(value, 'value')
    const t = args.timeout(args.options(opts))
    return native(() => this._inner.append(k, v, t))
  }

  async cas (key, expected, next, opts) {
    const k = args.bytes(key, 'key')
    if (expected === undefined) throw new TypeError('expected must be a string, Buffer or Uint8Array, or null for "absent"')
    const e = args.optionalBytes(expected, 'expected')
    const n = args.bytes(next, 'next')
    const o = args.options(opts)
    const t = args.timeout(o)
    const enc = this._enc(o)
    const current = o.returnCurrent ?? false
    if (typeof current !== 'boolean') throw new TypeError(`returnCurrent must be a boolean, not ${args.typeName(current)}`)
    const outcome = await native(() => this._inner.cas(k, e, n, t))
    return current ? { success: outcome.success, current: decode(outcome.current, enc) } : outcome.success
  }

  /** Key order, `end` exclusive; `limit` undefined returns every match. */
  async scan (opts) {
    const o = args.options(opts)
    const a = scanArgs(o)
    a.limit = args.optionalCount(o.limit, 'limit')
    const t = args.timeout(o)
    const enc = this._enc(o)
    return pairs(await native(() => this._inner.scan(a, t)), enc)
  }

  /** Every match, fetched page by page as the loop asks for more. */
  async * scanIter (opts) {
    const o = args.options(opts)
    const a = scanArgs(o)
    a.pageSize = args.optionalCount(o.pageSize, 'pageSize', 1) ?? PAGE
    const t = args.timeout(o)
    const enc = this._enc(o)
    for (;;) {
      const page = await native(() => this._inner.scan(a, t))
      yield * pairs(page, enc)
      if (page.cursor === undefined || page.cursor === null) return
      a.cursor = page.cursor
    }
  }

  async getMany (keys, opts) {
    if (!Array.isArray(keys)) throw new TypeError(`keys must be an array, not ${args.typeName(keys)}`)
    const ks = keys.map((k) => args.bytes(k, 'key'))
    const o = args.options(opts)
    const c = args.consistency(o)
    const t = args.timeout(o)
    const enc = this._enc(o)
    const values = await native(() => this._inner.getMany(ks, c, t))
    return values.map((v) => decode(v, enc))
  }

  /** Every pair is checked before anything is written; the core splits the batch by its caps. */
  async putMany (entries, opts) {
    const { keys, values } = entriesOf(entries)
    const t = args.timeout(args.options(opts))
    await native(() => this._inner.putMany(keys, values, t))
  }

  async status (opts) {
    const t = args.timeout(args.options(opts))
    return statusOf(await native(() => this._inner.status(t)))
  }

  /** Splits a shard online: split(shard, { at, timeoutMs }); the new shard's id. */
  async split (shard, opts) {
    const s = args.count(shard, 'shard', 0)
    const o = args.options(opts)
    const at = args.position(o.at)
    const t = args.timeout(o)
    return await native(() => this._inner.split(s, at, t))
  }

  async events (opts) {
    const t = args.timeout(args.options(opts))
    return eventsOf(await native(() => this._inner.events(t)))
  }

  /** Records this client's operations while `fn` runs; resolves the History. */
  async record (fn) {
    if (typeof fn !== 'function') throw new TypeError('record takes an async function')
    return recording(() => this._inner.startRecording(), () => this._inner.stopRecording(), fn)
  }

  /** The node this client is pinned to (null: any). */
  get node () {
    return this._inner.node ?? null
  }

  get closed () {
    return this._inner.closed
  }

  /** Later calls reject with CLOSED. Safe to call twice. */
  async close () {
    this._inner.close()
  }
}

module.exports = { Client, statusOf, eventsOf }
