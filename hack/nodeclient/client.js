// client.js is a proxyless gRPC client in Node.js (@grpc/grpc-js with the
// xDS resolver of @grpc/grpc-js-xds, both from the npm registry), driven by
// Fairway's interop tests (internal/nodeclient) over stdin and stdout.
//
// It reads the xDS bootstrap from GRPC_XDS_BOOTSTRAP_CONFIG (or the file in
// GRPC_XDS_BOOTSTRAP), prints one JSON line when it is ready
// ({"ready":true,"versions":{"node":...,"grpc-js":...,"grpc-js-xds":...}}),
// then answers each command line on stdin with one JSON line on stdout:
//
//   {"op":"calls","target":"echo.default:8080","n":30,"timeout_ms":5000,
//    "metadata":{"x-fairway-shard":"k1"}}
//     makes n UnaryCalls, one after the other, on the channel to
//     xds:///<target> (created on first use and kept open, so later commands
//     see the xDS updates a live channel gets), with the optional request
//     metadata, and answers
//     {"served":["pod-a",...],"errors":["14 UNAVAILABLE: ...",...]}:
//     the backend named in each response payload, and each failure.
//   {"op":"connect","target":"echo.default:8080"}
//     creates the channel to xds:///<target> if there is none and asks it to
//     connect, without making an RPC. Answers {} at once.
//   {"op":"close","target":"echo.default:8080"}
//     closes that channel and answers {}.
//
// A malformed command is answered {"error":"..."}. On end of input it closes
// every channel and exits 0. Every channel of the process shares one xDS
// client, so one ADS stream carries all of its targets.
'use strict';

const path = require('path');
const readline = require('readline');
const grpc = require('@grpc/grpc-js');
const grpcXds = require('@grpc/grpc-js-xds');
const protoLoader = require('@grpc/proto-loader');

grpcXds.register();

const definition = protoLoader.loadSync(path.join(__dirname, 'test.proto'), {keepCase: true});
const TestService = grpc.loadPackageDefinition(definition).grpc.testing.TestService;
const channels = new Map();

function channel(target) {
  let c = channels.get(target);
  if (!c) {
    c = new TestService('xds:///' + target, grpc.credentials.createInsecure());
    channels.set(target, c);
  }
  return c;
}

function unaryCall(client, timeoutMs, metadata) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + timeoutMs);
    client.UnaryCall({}, metadata, {deadline}, (err, resp) => {
      if (err) {
        resolve({error: `${err.code} ${grpc.status[err.code]}: ${err.details}`});
      } else {
        resolve({backend: Buffer.from(resp.payload ? resp.payload.body : []).toString()});
      }
    });
  });
}

async function calls(cmd) {
  if (typeof cmd.target !== 'string' || !Number.isInteger(cmd.n) || cmd.n < 1 || cmd.n > 10000) {
    return {error: 'calls needs a target and n in 1..10000'};
  }
  const client = channel(cmd.target);
  const timeoutMs = Number.isInteger(cmd.timeout_ms) && cmd.timeout_ms > 0 ? cmd.timeout_ms : 5000;
  if (cmd.metadata !== undefined && (typeof cmd.metadata !== 'object' || cmd.metadata === null)) {
    return {error: 'metadata must be an object of strings'};
  }
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(cmd.metadata || {})) {
    metadata.add(key, String(value));
  }
  const served = [];
  const errors = [];
  for (let i = 0; i < cmd.n; i++) {
    const r = await unaryCall(client, timeoutMs, metadata);
    if (r.error !== undefined) {
      errors.push(r.error);
    } else {
      served.push(r.backend);
    }
  }
  return {served, errors};
}

async function handle(line) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    return {error: `not JSON: ${e.message}`};
  }
  switch (cmd.op) {
    case 'calls':
      return calls(cmd);
    case 'connect':
      if (typeof cmd.target !== 'string') {
        return {error: 'connect needs a target'};
      }
      channel(cmd.target).getChannel().getConnectivityState(true);
      return {};
    case 'close': {
      const c = channels.get(cmd.target);
      if (c) {
        c.close();
        channels.delete(cmd.target);
      }
      return {};
    }
    default:
      return {error: `unknown op ${JSON.stringify(cmd.op)}`};
  }
}

function version(pkg) {
  return require(`${pkg}/package.json`).version;
}

async function main() {
  process.stdout.write(JSON.stringify({
    ready: true,
    versions: {
      'node': process.version,
      'grpc-js': version('@grpc/grpc-js'),
      'grpc-js-xds': version('@grpc/grpc-js-xds'),
    },
  }) + '\n');
  const lines = readline.createInterface({input: process.stdin, crlfDelay: Infinity});
  for await (const line of lines) {
    if (line.trim() === '') {
      continue;
    }
    process.stdout.write(JSON.stringify(await handle(line)) + '\n');
  }
  for (const c of channels.values()) {
    c.close();
  }
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`nodeclient: ${e.stack || e}\n`);
  process.exit(1);
});
