'use strict'
// Node.js Grenache peers for grenex's interop tests (grenache-nodejs-link/-http/-ws from the
// repository's node_modules). Every mode prints machine-readable lines on stdout:
//
//   server GRAPE NAME http|ws PORT       echo service; prints "READY <port>" once announced
//   client GRAPE NAME http|ws request|map PAYLOAD_JSON [compress] [TIMEOUT_MS]
//                                        prints one JSON line {ok, result} or {ok:false, error};
//                                        with $TLS_DIR set, mutual TLS with its client1 cert
//   pub GRAPE TOPIC PORT                 publishes {"seq":n,"from":"node"} every 50 ms
//   sub GRAPE TOPIC COUNT                prints COUNT messages (one per line), then exits
//
// The echo service answers {"echo": payload, "key": key, "server": "node"}, except
// {"action":"error","message":M} → error M, and {"action":"sleep","ms":N} → answers after N ms.

const fs = require('fs')
const path = require('path')
const Link = require('grenache-nodejs-link')
const GrHttp = require('grenache-nodejs-http')
const GrWs = require('grenache-nodejs-ws')

const [mode, grape, name, ...rest] = process.argv.slice(2)

const link = new Link({ grape, requestTimeout: 5000 })
link.start()

function out (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function exitSoon (code) {
  setTimeout(() => process.exit(code), 10)
}

process.on('SIGTERM', () => process.exit(0))

if (mode === 'server') {
  const [transport, portText] = rest
  const port = parseInt(portText, 10)
  const Peer = transport === 'ws' ? GrWs.PeerRPCServer : GrHttp.PeerRPCServer
  const peer = new Peer(link, { timeout: 300000 })
  peer.init()
  const service = peer.transport('server')
  service.listen(port)
  service.on('request', (rid, key, payload, handler) => {
    if (payload && payload.action === 'error') {
      handler.reply(new Error(payload.message))
    } else if (payload && payload.action === 'sleep') {
      setTimeout(() => handler.reply(null, { slept: payload.ms }), payload.ms)
    } else {
      handler.reply(null, { echo: payload, key, server: 'node' })
    }
  })
  let ready = false
  const announce = () => link.announce(name, service.port, {}, (err) => {
    if (!err && !ready) {
      ready = true
      process.stdout.write(`READY ${service.port}\n`)
    }
  })
  announce()
  setInterval(announce, 1000)
} else if (mode === 'client') {
  const [transport, kind, payloadText, compress, timeoutText] = rest
  const Peer = transport === 'ws' ? GrWs.PeerRPCClient : GrHttp.PeerRPCClient
  // TLS_DIR: mutual TLS with the certificates in that directory (client1 + ca).
  const tls = process.env.TLS_DIR
  const secure = tls
    ? {
        key: fs.readFileSync(path.join(tls, 'client1-key.pem')),
        cert: fs.readFileSync(path.join(tls, 'client1-crt.pem')),
        ca: fs.readFileSync(path.join(tls, 'ca-crt.pem')),
        rejectUnauthorized: false
      }
    : undefined
  const peer = new Peer(link, secure ? { secure } : {})
  peer.init()
  const opts = { timeout: parseInt(timeoutText || '5000', 10), compress: compress === 'compress' }
  peer[kind](name, JSON.parse(payloadText), opts, (err, result) => {
    if (err) out({ ok: false, error: err.message, result: result === undefined ? null : result })
    else out({ ok: true, result: result === undefined ? null : result })
    peer.stop()
    link.stop()
    exitSoon(0)
  })
} else if (mode === 'pub') {
  const port = parseInt(rest[0], 10)
  const peer = new GrWs.PeerPub(link, {})
  peer.init()
  const service = peer.transport('server')
  service.listen(port)
  let ready = false
  const announce = () => link.announce(name, service.port, {}, (err) => {
    if (!err && !ready) {
      ready = true
      process.stdout.write(`READY ${service.port}\n`)
    }
  })
  announce()
  setInterval(announce, 1000)
  let seq = 0
  setInterval(() => service.pub(JSON.stringify({ seq: seq++, from: 'node' })), 50)
} else if (mode === 'sub') {
  const count = parseInt(rest[0], 10)
  const peer = new GrWs.PeerSub(link, {})
  peer.init()
  let seen = 0
  peer.on('connected', () => process.stdout.write('CONNECTED\n'))
  peer.on('message', (msg) => {
    process.stdout.write(msg.toString() + '\n')
    if (++seen >= count) exitSoon(0)
  })
  peer.sub(name, { timeout: 10000 })
} else {
  process.stderr.write(`unknown mode ${mode}\n`)
  process.exit(2)
}
