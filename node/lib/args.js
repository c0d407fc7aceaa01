'use strict'
// Argument checks: the wrong type rejects with a TypeError, a bad value with INVALID_ARGUMENT.
// Nothing is coerced: a number is not a key, a string is not a timeout.

const { invalid } = require('./error')

const CONSISTENCIES = ['linearizable', 'lease', 'stale']

function typeName (v) {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'array'
  if (Buffer.isBuffer(v)) return 'Buffer'
  return typeof v === 'object' ? (v.constructor && v.constructor.name) || 'object' : typeof v
}

/** A key or value: string (UTF-8), Buffer or Uint8Array, as a Buffer. */
function bytes (v, what) {
  if (typeof v === 'string') return Buffer.from(v, 'utf8')
  if (Buffer.isBuffer(v)) return v
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength)
  throw new TypeError(`${what} must be a string, Buffer or Uint8Array, not ${typeName(v)}`)
}

function optionalBytes (v, what) {
  return v === undefined || v === null ? undefined : bytes(v, what)
}

/** The options object of a call (undefined: none). */
function options (v, what = 'options') {
  if (v === undefined) return {}
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new TypeError(`${what} must be an object, not ${typeName(v)}`)
  }
  return v
}

function optionalNumber (v, what) {
  if (v === undefined) return undefined
  if (typeof v !== 'number') throw new TypeError(`${what} must be a number, not ${typeName(v)}`)
  if (!Number.isFinite(v)) throw invalid(`${what} must be finite, not ${v}`)
  return v
}

function optionalCount (v, what, min = 0) {
  if (v === undefined) return undefined
  if (typeof v !== 'number') throw new TypeError(`${what} must be a number, not ${typeName(v)}`)
  if (!Number.isInteger(v) || v < min || v > 0xffffffff) {
    throw invalid(`${what} must be a whole number from ${min}, not ${v}`)
  }
  return v
}

function count (v, what, min = 0) {
  if (v === undefined) throw new TypeError(`${what} is required`)
  return optionalCount(v, what, min)
}

function timeout (opts) {
  const t = optionalNumber(opts.timeoutMs, 'timeoutMs')
  if (t !== undefined && t <= 0) throw invalid(`timeoutMs must be positive, not ${t}`)
  return t
}

function consistency (opts) {
  const c = opts.consistency
  if (c === undefined) return undefined
  if (typeof c !== 'string') throw new TypeError(`consistency must be a string, not ${typeName(c)}`)
  if (!CONSISTENCIES.includes(c)) {
    throw invalid(`consistency must be 'linearizable', 'lease' or 'stale', not '${c}'`)
  }
  return c
}

function nodeId (v, what = 'node id') {
  return count(v, what, 0)
}

/** A ring position (0 <= p < 2**64): a bigint, or a safe integer number; as a decimal string. */
function position (v, what = 'at') {
  if (v === undefined || v === null) return undefined
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) throw invalid(`${what} must be a whole number from 0 (a bigint above 2**53), not ${v}`)
    return String(v)
  }
  if (typeof v !== 'bigint') throw new TypeError(`${what} must be a bigint or a number, not ${typeName(v)}`)
  if (v < 0n || v >= 2n ** 64n) throw invalid(`${what} must be a ring position in 0..2**64, not ${v}`)
  return v.toString()
}

/** An encoding for values and scanned keys: undefined or null (Buffers) or one Node knows. */
function encoding (v, what = 'encoding') {
  if (v === undefined || v === null) return v
  if (typeof v !== 'string') throw new TypeError(`${what} must be a string such as 'utf8', not ${typeName(v)}`)
  if (!Buffer.isEncoding(v)) throw invalid(`unknown ${what} '${v}'`)
  return v
}

module.exports = {
  encoding,
  bytes, optionalBytes, options, optionalNumber, optionalCount, count, timeout, consistency, nodeId, typeName,
  position,
}
