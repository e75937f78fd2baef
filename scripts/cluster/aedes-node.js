#!/usr/bin/env node
// One node of a clustered MQTT broker for anchormq's tests: an Aedes broker that keeps retained
// messages, sessions and subscriptions in Redis (aedes-persistence-redis) and hands every message
// to the other nodes through Redis pub/sub (mqemitter-redis). Processes given the same Redis URL
// form one broker.
//
//   node aedes-node.js --redis redis://127.0.0.1:6379 [--port 0] [--id a] [--deps DIR]
//
// Listens on 127.0.0.1 only (port 0: the OS picks one). Once it accepts MQTT connections it prints
// `aedes <id> listening on 127.0.0.1:<port>` on stdout, then a line per client connection,
// subscription and publish. `--deps` is the folder where
// scripts/bootstrap.sh ran `npm ci` for scripts/cluster/package-lock.json (default
// .toolchain/cluster of this checkout). Stops on SIGTERM or SIGINT.
'use strict'

const net = require('node:net')
const path = require('node:path')
const { createRequire } = require('node:module')
const { pathToFileURL } = require('node:url')
const { parseArgs } = require('node:util')

const { values: args } = parseArgs({
  options: {
    redis: { type: 'string' },
    port: { type: 'string', default: '0' },
    id: { type: 'string', default: `aedes-${process.pid}` },
    deps: { type: 'string', default: path.join(__dirname, '..', '..', '.toolchain', 'cluster') }
  }
})

function fail (what, err) {
  console.error(`aedes ${args.id}: ${what}: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
}

async function main () {
  if (!args.redis) throw new Error('--redis redis://HOST:PORT is required')
  const url = new URL(args.redis)
  const redis = { host: url.hostname, port: Number(url.port || 6379) }
  // resolve the packages from the pinned install, wherever this script is run from
  const load = createRequire(path.join(path.resolve(args.deps), 'package.json'))
  const persistence = load('aedes-persistence-redis')(redis)
  // matchEmptyLevels: `a/#` also matches `a` [MQTT-4.7.1-2], as Aedes' own default emitter does
  const mq = load('mqemitter-redis')({ ...redis, matchEmptyLevels: true })
  mq.state.on('error', err => console.error(`aedes ${args.id}: redis emitter: ${err.message}`))
  const { Aedes } = await import(pathToFileURL(load.resolve('aedes')).href)

  const broker = await Aedes.createBroker({ id: args.id, persistence, mq })
  broker.on('client', c => console.log(`client ${c.id} connected`))
  broker.on('clientDisconnect', c => console.log(`client ${c.id} disconnected`))
  broker.on('clientError', (c, err) => console.log(`client ${c.id}: ${err.message}`))
  broker.on('connectionError', (c, err) => console.log(`connection error: ${err.message}`))
  broker.on('subscribe', (subs, c) => console.log(`client ${c.id} subscribed ${subs.map(s => s.topic).join(' ')}`))
  broker.on('publish', (p, c) => {
    if (c) console.log(`client ${c.id} published ${p.topic} (${p.payload.length} B, qos ${p.qos}${p.retain ? ', retained' : ''})`)
  })

  const server = net.createServer(broker.handle)
  server.on('error', err => fail('listener', err))
  server.listen(Number(args.port), '127.0.0.1', () => {
    console.log(`aedes ${args.id} listening on 127.0.0.1:${server.address().port}`)
  })

  const stop = () => {
    server.close()
    broker.close(() => process.exit(0))
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

main().catch(err => fail('start', err))
