#!/usr/bin/env node
// Interoperability test: grpc-js's proxyless xDS client (@grpc/grpc-js-xds) against `xds-sidecar`.
//
//     node client.js --sidecar PATH/TO/xds-sidecar [--accept REGISTRY SERVICE...]
//
// Starts three gRPC backends on 127.0.0.1 (each serves grpc.health.v1.Health/Check and counts
// the calls of the client, told apart from the sidecar's own checks by their service name),
// writes a registry naming two of them, starts `xds-sidecar` on a free loopback port and points
// a grpc-js client at `xds:///myservice` through an inline bootstrap. Then checks, every wait
// bounded:
//
// 1. RPCs are balanced round robin over both registered backends, and the sidecar's /clients
//    shows the client's node holding (ACKed) the version sent of LDS, RDS, CDS and EDS;
// 2. replacing the registry file (rename over it) moves the traffic to the new endpoint set;
// 3. editing the file in place does too;
// 4. an invalid registry is rejected: RPCs keep reaching the last good endpoints;
// 5. with the sidecar's gRPC health checks on, a backend whose checks fail stops receiving RPCs
//    and receives them again once it recovers;
// 6. clusters with every other load-balancing policy (least_request, random, maglev, ring_hash)
//    are accepted, those grpc-js does not implement with the fallback the sidecar lists beside
//    them;
// and the client ACKed every update, NACKed none.
//
// With --accept REGISTRY SERVICE... it runs a registry of the caller's instead (the sidecar's
// health checks off) and checks only that the client ACKs everything it is sent for those
// services: the Rust test hands it examples/registry-full.yaml, which uses every setting.
//
// The same scenario as grpcio_client.py, run by a second client implementation: grpc-js
// validates xDS resources by its own reading of the gRFCs (A27, A28, ...). Uses no .proto
// file: the two health messages are encoded by hand. Prints one progress line per step; exits 0
// on success, 1 with the reason and the sidecar's log on failure. Debug the client with
// GRPC_TRACE=xds_client,xds_resolver,cds_balancer GRPC_VERBOSITY=DEBUG.
'use strict';

const childProcess = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const SERVICE = 'myservice';
const NODE_ID = 'interop-grpc-js';
// The gRPC health service name the sidecar checks in step 5 (the client's calls use "").
const HEALTH_SERVICE = 'xds-sidecar-check';
const HEALTH_CHECK_LINE =
  `health_check: {kind: grpc, service_name: ${HEALTH_SERVICE}, interval: 100ms, timeout: 100ms, ` +
  'unhealthy_threshold: 2, healthy_threshold: 2}';
// Bounds of every wait, in milliseconds.
const SIDECAR_START_TIMEOUT = 20000;
const FIRST_ROUND_ROBIN_TIMEOUT = 30000;
const UPDATE_TIMEOUT = 20000;
const RPC_TIMEOUT = 3000;
const BATCH = 12;
const INVALID_EDIT_OBSERVE = 3000;

// grpc.health.v1.HealthCheckResponse.ServingStatus
const SERVING = 1;
const NOT_SERVING = 2;

class TestFailure extends Error {}

// The running sidecar process, for the SIGTERM handler.
let liveSidecar = null;

function log(message) {
  console.log(`[grpc-js-interop] ${message}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function bootstrapJson(xdsPort) {
  return JSON.stringify({
    xds_servers: [
      { server_uri: `127.0.0.1:${xdsPort}`, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] },
    ],
    node: { id: NODE_ID, locality: { zone: 'z' } },
  });
}

// --- The health messages, by hand ---------------------------------------------------------

// HealthCheckRequest { string service = 1; }: the service name.
function decodeHealthRequest(bytes) {
  let service = '';
  let i = 0;
  while (i < bytes.length) {
    const key = bytes[i++];
    let len = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[i++];
      len |= (b & 0x7f) << shift;
      if (!(b & 0x80)) break;
    }
    if (key === 0x0a) service = bytes.subarray(i, i + len).toString('utf8');
    i += len;
  }
  return service;
}

// HealthCheckResponse { ServingStatus status = 1; }
const encodeHealthResponse = (status) => Buffer.from([0x08, status]);
const decodeHealthStatus = (bytes) => (bytes.length >= 2 && bytes[0] === 0x08 ? bytes[1] : 0);

const identity = (x) => x;
const HEALTH_SERVICE_DEFINITION = {
  check: {
    path: '/grpc.health.v1.Health/Check',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

// --- Backends -------------------------------------------------------------------------------

class Backend {
  constructor(grpc, label) {
    this.label = label;
    this.calls = 0;
    this.checked = SERVING;
    this.server = new grpc.Server();
    this.server.addService(HEALTH_SERVICE_DEFINITION, {
      check: (call, callback) => {
        const service = decodeHealthRequest(call.request);
        if (service === '') {
          this.calls += 1;
          callback(null, encodeHealthResponse(SERVING));
        } else {
          callback(null, encodeHealthResponse(this.checked));
        }
      },
    });
    this.grpc = grpc;
  }

  start() {
    return new Promise((resolve, reject) => {
      this.server.bindAsync('127.0.0.1:0', this.grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (err) reject(new TestFailure(`backend ${this.label}: cannot bind 127.0.0.1: ${err.message}`));
        else {
          this.port = port;
          resolve();
        }
      });
    });
  }

  get address() {
    return `127.0.0.1:${this.port}`;
  }

  // What the backend answers to the sidecar's health checks (service HEALTH_SERVICE).
  setServing(serving) {
    this.checked = serving ? SERVING : NOT_SERVING;
  }

  stop() {
    this.server.forceShutdown();
  }
}

// --- The registry ---------------------------------------------------------------------------

function registryYaml(endpoints, extraServiceLine) {
  const listed = endpoints.map((e) => `"${e}"`).join(', ');
  let text = `services:\n  - name: ${SERVICE}\n    endpoints: [${listed}]\n`;
  if (extraServiceLine) text += `    ${extraServiceLine}\n`;
  return text;
}

function writeSynced(file, text) {
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

// Writes a new file beside `file` and renames it over `file` (atomic replace).
function replaceFile(file, text) {
  writeSynced(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
}

// Truncates and rewrites `file` itself (same inode), like an editor saving in place.
const editInPlace = writeSynced;

// --- The sidecar ----------------------------------------------------------------------------

class Sidecar {
  constructor(binary, config, workdir, extraArgs = []) {
    this.binary = binary;
    this.config = config;
    this.extraArgs = extraArgs;
    this.logPath = path.join(workdir, 'sidecar.log');
    this.proc = null;
  }

  async start(attempts = 3) {
    for (let attempt = 1; attempt <= attempts; attempt++) {
      this.port = await freePort();
      this.adminPort = await freePort();
      const args = [
        '--config', this.config,
        '--xds-addr', `127.0.0.1:${this.port}`,
        '--admin-addr', `127.0.0.1:${this.adminPort}`,
        // Every xDS request and response and every reload, without HTTP/2 frames.
        '--log-level', 'info,xds_server=debug,xds_cache=debug,xds_examples=debug',
        ...this.extraArgs,
      ];
      log(`starting ${this.binary} ${args.join(' ')}`);
      const out = fs.openSync(this.logPath, 'a');
      this.proc = childProcess.spawn(this.binary, args, { stdio: ['ignore', out, out] });
      liveSidecar = this.proc;
      fs.closeSync(out);
      this.exit = null;
      this.proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        liveSidecar = null;
      });
      if (await this.waitListening()) {
        log(`xds-sidecar is listening on 127.0.0.1:${this.port} (pid ${this.proc.pid})`);
        return;
      }
      if (this.exit === null) {
        await this.stop();
        throw new TestFailure(`xds-sidecar did not accept TCP connections within ${SIDECAR_START_TIMEOUT / 1000} s`);
      }
      log(`xds-sidecar exited with ${JSON.stringify(this.exit)} (attempt ${attempt} of ${attempts})`);
    }
    throw new TestFailure('xds-sidecar exited at start-up (see its log below)');
  }

  async waitListening() {
    const deadline = Date.now() + SIDECAR_START_TIMEOUT;
    while (Date.now() < deadline) {
      if (this.exit !== null) return false;
      const connected = await new Promise((resolve) => {
        const socket = net.connect({ host: '127.0.0.1', port: this.port });
        socket.setTimeout(500);
        socket.once('connect', () => resolve(true));
        socket.once('error', () => resolve(false));
        socket.once('timeout', () => resolve(false));
        socket.once('close', () => resolve(false));
      });
      if (connected) return true;
      await sleep(100);
    }
    return false;
  }

  adminJson(page) {
    return new Promise((resolve, reject) => {
      const request = http.get({ host: '127.0.0.1', port: this.adminPort, path: page, timeout: 5000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => {
          try {
            resolve(JSON.parse(body));
          } catch (e) {
            reject(new TestFailure(`admin ${page}: not JSON (${e.message}): ${body.slice(0, 200)}`));
          }
        });
      });
      request.on('timeout', () => request.destroy(new Error('timed out')));
      request.on('error', (e) => reject(new TestFailure(`admin ${page}: ${e.message}`)));
    });
  }

  logText() {
    try {
      return fs.readFileSync(this.logPath, 'utf8');
    } catch (e) {
      return `(no log: ${e.message})`;
    }
  }

  checkAlive() {
    if (this.exit !== null) throw new TestFailure(`xds-sidecar exited unexpectedly: ${JSON.stringify(this.exit)}`);
  }

  async stop() {
    if (this.proc === null || this.exit !== null) return;
    const exited = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(timer);
  }
}

// --- The client -----------------------------------------------------------------------------

class Client {
  constructor(grpc, service = SERVICE) {
    const Health = grpc.makeGenericClientConstructor(HEALTH_SERVICE_DEFINITION, 'Health');
    this.grpc = grpc;
    this.stub = new Health(`xds:///${service}`, grpc.credentials.createInsecure());
  }

  call() {
    return new Promise((resolve) => {
      const metadata = new this.grpc.Metadata({ waitForReady: true });
      this.stub.check(Buffer.alloc(0), metadata, { deadline: Date.now() + RPC_TIMEOUT }, (err, reply) => {
        if (err) resolve(`${this.grpc.status[err.code] || err.code}: ${err.details}`);
        else if (decodeHealthStatus(reply) !== SERVING) resolve(`status ${decodeHealthStatus(reply)}`);
        else resolve(null);
      });
    });
  }

  // Makes `n` calls one after another; resolves to the list of errors (empty when all succeeded).
  async batch(n) {
    const errors = [];
    for (let i = 0; i < n; i++) {
      const error = await this.call();
      if (error) errors.push(error);
    }
    return errors;
  }

  close() {
    this.stub.close();
  }
}

const counts = (backends) => Object.fromEntries(backends.map((b) => [b.label, b.calls]));
const since = (before, backends) => Object.fromEntries(backends.map((b) => [b.label, b.calls - before[b.label]]));
const distinct = (errors) => [...new Set(errors)].sort().slice(0, 3);

// Makes batches of calls until one succeeds entirely, reaches every backend of `hit` and none of
// `idle`. Resolves to that batch's calls per backend.
async function waitForTraffic(client, sidecar, backends, hit, idle, timeout, what) {
  const started = Date.now();
  let last = null;
  while (Date.now() - started < timeout) {
    sidecar.checkAlive();
    const before = counts(backends);
    const errors = await client.batch(BATCH);
    const delta = since(before, backends);
    last = { delta, errors };
    if (errors.length === 0 && hit.every((b) => delta[b.label] > 0) && idle.every((b) => delta[b.label] === 0)) {
      log(`${what}: ok after ${((Date.now() - started) / 1000).toFixed(1)} s, calls per backend ${JSON.stringify(delta)}`);
      return delta;
    }
    await sleep(200);
  }
  const { delta, errors } = last || { delta: {}, errors: [] };
  throw new TestFailure(
    `${what}: not reached within ${timeout / 1000} s: wanted calls on ${JSON.stringify(hit.map((b) => b.label))} ` +
      `and none on ${JSON.stringify(idle.map((b) => b.label))}; last batch of ${BATCH}: calls per backend ` +
      `${JSON.stringify(delta)}, ${errors.length} errors ${JSON.stringify(distinct(errors))}`,
  );
}

// The types the client's node holds in /clients: short name -> [sent, acked, last NACK].
async function heldByNode(sidecar) {
  const { clients } = await sidecar.adminJson('/clients');
  const ours = clients.filter((c) => c.node_id === NODE_ID);
  if (ours.length === 0) throw new TestFailure(`/clients does not list node ${NODE_ID}: ${JSON.stringify(clients)}`);
  const held = {};
  for (const stream of ours[0].streams) {
    for (const t of Object.values(stream.types)) held[t.type] = [t.last_sent_version, t.last_acked_version, t.last_nack];
  }
  return held;
}

// Waits until a version of type `short` other than `before` was sent and the client has
// answered it, ACK or NACK (the final checks say which).
async function waitForAnswer(sidecar, short, before, timeout) {
  const started = Date.now();
  let held = {};
  while (Date.now() - started < timeout) {
    held = await heldByNode(sidecar);
    const [sent, acked, nack] = held[short] || [];
    if (sent && sent !== before && (sent === acked || nack)) return;
    await sleep(100);
  }
  throw new TestFailure(`no answer to a new ${short} version within ${timeout / 1000} s: ${JSON.stringify(held)}`);
}

// Fails unless the client's node holds (has ACKed) the version last sent of LDS, RDS, CDS and
// EDS and NACKed none; resolves to the versions.
async function expectAcked(sidecar) {
  const held = await heldByNode(sidecar);
  for (const short of ['LDS', 'RDS', 'CDS', 'EDS']) {
    const [sent, acked, nack] = held[short] || [];
    if (!sent || sent !== acked || nack) {
      throw new TestFailure(`/clients: ${short} of ${NODE_ID} should be ACKed at the version sent: ${JSON.stringify(held)}`);
    }
  }
  return JSON.stringify(Object.fromEntries(Object.entries(held).map(([t, [sent]]) => [t, sent])));
}

// Runs `scenario(clients)`: prints the sidecar's log if it fails; then closes the clients it put
// in `clients`, stops the sidecar and the backends.
async function running(sidecar, backends, scenario) {
  const clients = [];
  try {
    await scenario(clients);
  } catch (e) {
    printSidecarLog(sidecar);
    throw e;
  } finally {
    for (const c of clients) c.close();
    await sidecar.stop();
    for (const b of backends) b.stop();
  }
}

// The bootstrap the client reads when its first xds: channel is made: set it (with the
// sidecar's port) before that.
function useBootstrap(xdsPort) {
  delete process.env.GRPC_XDS_BOOTSTRAP;
  process.env.GRPC_XDS_BOOTSTRAP_CONFIG = bootstrapJson(xdsPort);
}

// Fails if the sidecar logged a NACK.
function expectNoNack(sidecar) {
  const nacks = sidecar.logText().split('\n').filter((line) => line.includes('NACK: the client rejected'));
  if (nacks.length) throw new TestFailure(`the client NACKed ${nacks.length} responses, the first: ${nacks[0]}`);
}

// --accept: the sidecar serves `registry` (health checks off: its endpoints need not exist) and
// a client dials xds:///NAME for each of `services`; every resource the client is sent for them
// must be ACKed, none NACKed, whether or not the RPCs find a backend.
async function runAccept(grpc, binary, workdir, registry, services) {
  const sidecar = new Sidecar(binary, path.resolve(registry), workdir, ['--no-health-checks']);
  await running(sidecar, [], async (clients) => {
    await sidecar.start();
    useBootstrap(sidecar.port);
    log(`dialing ${services.map((s) => `xds:///${s}`).join(', ')} as served from ${registry}`);
    for (const service of services) clients.push(new Client(grpc, service));
    const outcomes = await Promise.all(clients.map((c) => c.call()));
    services.forEach((service, i) => log(`${service}: ${outcomes[i] || 'OK'}`));
    const started = Date.now();
    for (;;) {
      try {
        const acked = await expectAcked(sidecar);
        log(`every resource type ACKed: ${acked}`);
        break;
      } catch (e) {
        if (!(e instanceof TestFailure) || Date.now() - started > UPDATE_TIMEOUT) throw e;
        await sleep(200);
      }
    }
    expectNoNack(sidecar);
    sidecar.checkAlive();
  });
}

async function run(grpc, binary, workdir) {
  const backends = ['backend1', 'backend2', 'backend3'].map((label) => new Backend(grpc, label));
  const [b1, b2, b3] = backends;
  const sidecar = new Sidecar(binary, path.join(workdir, 'registry.yaml'), workdir);
  await running(sidecar, backends, async (clients) => {
    for (const b of backends) await b.start();
    log(`backends: ${backends.map((b) => `${b.label}=${b.address}`).join(', ')}`);
    const registry = sidecar.config;
    replaceFile(registry, registryYaml([b1.address, b2.address]));
    await sidecar.start();
    useBootstrap(sidecar.port);
    const client = new Client(grpc);
    clients.push(client);

    log(`step 1: round robin over ${b1.label} and ${b2.label}`);
    await waitForTraffic(client, sidecar, backends, [b1, b2], [b3], FIRST_ROUND_ROBIN_TIMEOUT, 'first RPCs');
    const before = counts(backends);
    const errors = await client.batch(20);
    const spread = since(before, backends);
    if (errors.length || spread[b1.label] < 5 || spread[b2.label] < 5 || spread[b3.label]) {
      throw new TestFailure(
        `20 calls were not balanced round robin: calls per backend ${JSON.stringify(spread)}, errors ${JSON.stringify(distinct(errors))}`,
      );
    }
    log(`step 1: 20 calls balanced ${JSON.stringify(spread)}`);
    log(`step 1: the sidecar's /clients shows the client holding what it was sent: ${await expectAcked(sidecar)}`);

    log(`step 2: registry replaced by rename: ${b2.label} -> ${b3.label}`);
    replaceFile(registry, registryYaml([b1.address, b3.address]));
    await waitForTraffic(client, sidecar, backends, [b1, b3], [b2], UPDATE_TIMEOUT, 'after rename');

    log(`step 3: registry edited in place: ${b1.label} -> ${b2.label}`);
    editInPlace(registry, registryYaml([b2.address, b3.address]));
    await waitForTraffic(client, sidecar, backends, [b2, b3], [b1], UPDATE_TIMEOUT, 'after in-place edit');

    log('step 4: invalid registry (unknown field `weight`, would send everything to backend1)');
    replaceFile(registry, registryYaml([b1.address], 'weight: 3'));
    const observeUntil = Date.now() + INVALID_EDIT_OBSERVE;
    const beforeInvalid = counts(backends);
    const invalidErrors = [];
    while (Date.now() < observeUntil) {
      sidecar.checkAlive();
      invalidErrors.push(...(await client.batch(4)));
      await sleep(20);
    }
    const delta = since(beforeInvalid, backends);
    if (invalidErrors.length || delta[b1.label] || !delta[b2.label] || !delta[b3.label]) {
      throw new TestFailure(
        `after the invalid edit RPCs should keep going to ${b2.label} and ${b3.label} only: calls per backend ` +
          `${JSON.stringify(delta)}, ${invalidErrors.length} errors ${JSON.stringify(distinct(invalidErrors))}`,
      );
    }
    if (!sidecar.logText().includes('weight')) {
      throw new TestFailure('xds-sidecar did not log the rejected registry (no line mentions `weight`)');
    }
    log(`step 4: rejected and logged; last good endpoints kept for ${INVALID_EDIT_OBSERVE / 1000} s, calls per backend ${JSON.stringify(delta)}`);

    log(`step 5: gRPC health checks by the sidecar; ${b3.label} fails its checks, then recovers`);
    replaceFile(registry, registryYaml([b2.address, b3.address], HEALTH_CHECK_LINE));
    await waitForTraffic(client, sidecar, backends, [b2, b3], [b1], UPDATE_TIMEOUT, 'health-checked service');
    b3.setServing(false);
    await waitForTraffic(client, sidecar, backends, [b2], [b1, b3], UPDATE_TIMEOUT, `${b3.label} failing its checks`);
    b3.setServing(true);
    await waitForTraffic(client, sidecar, backends, [b2, b3], [b1], UPDATE_TIMEOUT, `${b3.label} recovered`);
    // Ring hash, and policies grpc-js does not implement, sent with fallbacks
    // (load_balancing_policy): the Cluster is accepted and RPCs keep reaching both backends.
    for (const policy of ['least_request', 'random', 'maglev', 'ring_hash']) {
      log(`step 6: lb_policy ${policy}`);
      const [before] = (await heldByNode(sidecar)).CDS;
      replaceFile(registry, registryYaml([b2.address, b3.address], `lb_policy: ${policy}`));
      await waitForAnswer(sidecar, 'CDS', before, UPDATE_TIMEOUT);
      await waitForTraffic(client, sidecar, backends, [b2, b3], [b1], UPDATE_TIMEOUT, `lb_policy ${policy}`);
    }
    const acked = await expectAcked(sidecar);
    expectNoNack(sidecar);
    log(`every update was ACKed, none NACKed: ${acked}`);
    sidecar.checkAlive();
  });
}

function printSidecarLog(sidecar) {
  const lines = sidecar.logText().split('\n');
  const shown = lines.slice(-400);
  console.error(`----- xds-sidecar log (${sidecar.logPath}, last ${shown.length} of ${lines.length} lines) -----`);
  console.error(shown.join('\n'));
  console.error('----- end of xds-sidecar log -----');
}

async function main() {
  const at = process.argv.indexOf('--sidecar');
  const accept = process.argv.indexOf('--accept');
  if (at < 0 || !process.argv[at + 1] || (accept >= 0 && process.argv.length < accept + 3)) {
    console.error('usage: node client.js --sidecar PATH/TO/xds-sidecar [--accept REGISTRY SERVICE...]');
    return 2;
  }
  const binary = path.resolve(process.argv[at + 1]);
  try {
    fs.accessSync(binary, fs.constants.X_OK);
  } catch {
    console.error(`[grpc-js-interop] FAIL: ${binary} is not an executable (build it: cargo build --workspace --bins)`);
    return 1;
  }
  // Loopback only: never let a proxy from the environment carry these connections.
  for (const v of ['http_proxy', 'https_proxy', 'grpc_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'no_grpc_proxy']) {
    delete process.env[v];
  }
  const grpc = require('@grpc/grpc-js');
  require('@grpc/grpc-js-xds').register();
  log(`@grpc/grpc-js ${require('@grpc/grpc-js/package.json').version}, @grpc/grpc-js-xds ${require('@grpc/grpc-js-xds/package.json').version}, node ${process.version}`);
  const workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'xds-grpc-js-interop-'));
  try {
    if (accept >= 0) await runAccept(grpc, binary, workdir, process.argv[accept + 1], process.argv.slice(accept + 2));
    else await run(grpc, binary, workdir);
  } catch (e) {
    console.error(`[grpc-js-interop] FAIL: ${e instanceof TestFailure ? e.message : e.stack}`);
    return 1;
  } finally {
    fs.rmSync(workdir, { recursive: true, force: true });
  }
  log('PASS');
  return 0;
}

// A SIGTERM (the Rust test's timeout) cannot unwind through run()'s cleanup: stop the sidecar
// here, then exit as a failure.
process.on('SIGTERM', () => {
  console.error('[grpc-js-interop] FAIL: terminated by SIGTERM');
  if (liveSidecar !== null) liveSidecar.kill('SIGTERM');
  process.exit(1);
});

main().then((code) => process.exit(code));
