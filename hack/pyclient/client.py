"""client.py is a proxyless gRPC client on gRPC C-core (Debian's
python3-grpcio), driven by Fairway's interop tests (internal/pyclient) over
stdin and stdout, like hack/nodeclient/client.js.

It reads the xDS bootstrap from GRPC_XDS_BOOTSTRAP_CONFIG (or the file in
GRPC_XDS_BOOTSTRAP); C-core reads GRPC_EXPERIMENTAL_XDS_CUSTOM_LB_CONFIG and
GRPC_TRACE from the environment too. It prints one JSON line when it is ready
({"ready":true,"versions":{"python":...,"grpcio":...}}), then answers each
command line on stdin with one JSON line on stdout:

  {"op":"calls","target":"echo.default:8080","n":30,"timeout_ms":5000,
   "metadata":{"x-fairway-shard":"k1"}}
    makes n EmptyCalls of grpc.testing.TestService, one after the other, on
    the channel to xds:///<target> (created on first use and kept open, so
    later commands see the xDS updates a live channel gets), with the
    optional request metadata, and answers
    {"served":["pod-a",...],"errors":["14 UNAVAILABLE: ...",...]}: the
    backend named by each response's x-backend header, and each failure.
  {"op":"connect","target":"echo.default:8080"}
    creates the channel to xds:///<target> if there is none and asks it to
    connect, without making an RPC: its xDS client fetches the target's
    resources. Answers {} at once.
  {"op":"close","target":"echo.default:8080"}
    closes that channel and answers {}.

A malformed command is answered {"error":"..."}. On end of input it closes
every channel and exits 0. Every channel of the process shares C-core's one
xDS client, so one ADS stream carries all of its targets. A C-core channel
applies the xDS updates it got only when an RPC runs; the tests make RPCs
until they see a change.

With no protoc here, requests and responses are raw bytes: EmptyCall's
grpc.testing.Empty serializes to b"".
"""

import json
import platform
import sys

import grpc

EMPTY_CALL = "/grpc.testing.TestService/EmptyCall"
BACKEND_HEADER = "x-backend"

channels = {}


def channel_for(target):
    """The (channel, EmptyCall callable) of target, created on first use."""
    entry = channels.get(target)
    if entry is None:
        channel = grpc.insecure_channel("xds:///" + target)
        # None serializers: the request and response are bytes as they are.
        entry = (channel, channel.unary_unary(EMPTY_CALL))
        channels[target] = entry
    return entry


def unary(call, timeout, metadata):
    try:
        _, rpc = call.with_call(b"", timeout=timeout, metadata=metadata)
    except grpc.RpcError as e:
        code = e.code()
        return None, "%d %s: %s" % (code.value[0], code.name, e.details())
    for key, value in rpc.initial_metadata() or ():
        if key == BACKEND_HEADER:
            return value, None
    return None, "response without an %s header" % BACKEND_HEADER


def calls(cmd):
    target, n = cmd.get("target"), cmd.get("n")
    if not isinstance(target, str) or not isinstance(n, int) or not 1 <= n <= 10000:
        return {"error": "calls needs a target and n in 1..10000"}
    timeout_ms = cmd.get("timeout_ms")
    if not isinstance(timeout_ms, int) or timeout_ms <= 0:
        timeout_ms = 5000
    md = cmd.get("metadata") or {}
    if not isinstance(md, dict):
        return {"error": "metadata must be an object of strings"}
    metadata = tuple((str(k), str(v)) for k, v in md.items()) or None
    _, call = channel_for(target)
    served, errors = [], []
    for _ in range(n):
        backend, err = unary(call, timeout_ms / 1000.0, metadata)
        if err is None:
            served.append(backend)
        else:
            errors.append(err)
    return {"served": served, "errors": errors}


def handle(line):
    try:
        cmd = json.loads(line)
    except ValueError as e:
        return {"error": "not JSON: %s" % e}
    if not isinstance(cmd, dict):
        return {"error": "a command is a JSON object"}
    op = cmd.get("op")
    if op == "calls":
        return calls(cmd)
    if op == "connect":
        target = cmd.get("target")
        if not isinstance(target, str):
            return {"error": "connect needs a target"}
        channel, _ = channel_for(target)
        channel.subscribe(lambda state: None, try_to_connect=True)
        return {}
    if op == "close":
        entry = channels.pop(cmd.get("target"), None)
        if entry is not None:
            entry[0].close()
        return {}
    return {"error": "unknown op %s" % json.dumps(op)}


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    reply({"ready": True, "versions": {"python": platform.python_version(), "grpcio": grpc.__version__}})
    for line in sys.stdin:
        if line.strip():
            reply(handle(line))
    for channel, _ in channels.values():
        channel.close()


if __name__ == "__main__":
    main()
