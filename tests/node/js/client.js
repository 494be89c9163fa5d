'use strict'
// A Node.js client of a grenex node, with the npm Grenache packages only
// (grenache-nodejs-link, grenache-nodejs-http, grenache-nodejs-ws from node_modules).
//
//   node client.js GRAPE CLUSTER NODE REQUESTS_JSON
//
// REQUESTS_JSON is an array of {"payload": {...}, "compress": bool}.  The script first
// subscribes to grenex:<CLUSTER>:events (WebSocket pub/sub) and prints {"subscribed": true},
// then sends each payload in turn to grenex:<CLUSTER>:node:<NODE> with grenache-nodejs-http and
// prints one line per reply: {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
// Then it prints every published event whose seq is one of the replies' seqs, as
// {"event": {...}}, until it has seen them all (or 10 s pass), and exits.

const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require('grenache-nodejs-http')
const { PeerSub } = require('grenache-nodejs-ws')

const [grape, cluster, node, requestsText] = process.argv.slice(2)
const requests = JSON.parse(requestsText)

const link = new Link({ grape, requestTimeout: 5000 })
link.start()
const rpc = new PeerRPCClient(link, {})
rpc.init()
const sub = new PeerSub(link, {})
sub.init()

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function finish (code) {
  sub.stop()
  rpc.stop()
  link.stop()
  setTimeout(() => process.exit(code), 20)
}

const events = []
const wanted = new Set()
let waiting = false
sub.on('message', (msg) => {
  const frame = JSON.parse(msg.toString()) // one frame per log entry: {seq, events: [...]}
  for (const ev of frame.events) events.push(ev)
  if (waiting) flush()
})

function flush () {
  for (const ev of events.splice(0)) {
    if (wanted.has(ev.seq)) out({ event: ev })
  }
}

function send (i) {
  if (i >= requests.length) {
    waiting = true
    flush()
    // every reply's events arrive on the stream right after its apply; 1 s is plenty
    setTimeout(() => { flush(); finish(0) }, 1000)
    return
  }
  const { payload, compress } = requests[i]
  rpc.request(`grenex:${cluster}:node:${node}`, payload, { timeout: 10000, compress: !!compress },
    (err, result) => {
      if (err) out({ ok: false, error: err.message })
      else {
        out({ ok: true, result })
        if (result && typeof result.seq === 'number') wanted.add(result.seq)
      }
      send(i + 1)
    })
}

let started = false
sub.on('connected', () => {
  if (started) return
  started = true
  out({ subscribed: true })
  send(0)
})
sub.sub(`grenex:${cluster}:events`, { timeout: 10000 })
setTimeout(() => { out({ error: 'timeout' }); finish(1) }, 30000)
