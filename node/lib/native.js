'use strict'
// Loads the addon that `scripts/build.js` built into ../native (napi-rs's loader picks the file
// for this platform).
let addon
try {
  addon = require('../native')
} catch (e) {
  throw new Error(
    'scalestore: the native addon is not built (run `npm run build` in the package, or reinstall it); ' + e.message,
    { cause: e },
  )
}
module.exports = addon
