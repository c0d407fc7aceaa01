'use strict'
// The one place native errors become JavaScript ones. The addon (bindings/node/src/error.rs)
// prefixes each message with its code and the core's kind, `[UNAVAILABLE:not_leader] ...`;
// `native()` turns those into a `ScaleStoreError` with `.code` and `.kind`, and every public
// method runs through it, so every failure is a rejection of the Promise the method returned.

const CODES = Object.freeze([
  'UNAVAILABLE', 'TIMEOUT', 'INVALID_ARGUMENT', 'CLOSED', 'SESSION_EXPIRED', 'STORAGE', 'DATA_DIR', 'UNSUPPORTED',
])

class ScaleStoreError extends Error {
  /**
   * @param {string} code one of ScaleStoreError.CODES
   * @param {string} message what failed, with its causes
   * @param {{ cause?: unknown, kind?: string }} [options] kind: the core's stable label
   *   (`not_leader`, `unknown_node`, `timeout`, ...; default: the code in lower case)
   */
  constructor (code, message, options) {
    super(message, options)
    this.name = 'ScaleStoreError'
    this.code = code
    this.kind = options?.kind ?? code.toLowerCase()
  }
}
ScaleStoreError.CODES = CODES

const CODED = /^\[([A-Z_]+)(?::([a-z_]+))?\] ([\s\S]*)$/

/** A native error as a ScaleStoreError (others pass through unchanged). */
function translate (error) {
  if (error instanceof ScaleStoreError || !(error instanceof Error)) return error
  const m = CODED.exec(error.message)
  if (m && CODES.includes(m[1])) return new ScaleStoreError(m[1], m[3], { kind: m[2] })
  return error
}

/** Runs a native call (sync or async); its failures come out translated. */
async function native (call) {
  try {
    return await call()
  } catch (e) {
    throw translate(e)
  }
}

/** A plain (non-Promise) native call: its failure thrown as a ScaleStoreError. */
function now (call) {
  try {
    return call()
  } catch (e) {
    throw translate(e)
  }
}

function invalid (message) {
  return new ScaleStoreError('INVALID_ARGUMENT', message)
}

function closed (message) {
  return new ScaleStoreError('CLOSED', message)
}

/** UNSUPPORTED in a client-only build of the addon (no `embedded` cargo feature). */
function requireEmbedded (addon, what) {
  if (typeof addon.embedded === 'function' && addon.embedded()) return
  throw new ScaleStoreError('UNSUPPORTED', `${what} needs the embedded cluster, and this scalestore package is the client-only build (compiled without the 'embedded' cargo feature, so without RocksDB); install the full package, or connect() to a running cluster`)
}

module.exports = { ScaleStoreError, CODES, native, now, translate, invalid, closed, requireEmbedded }
