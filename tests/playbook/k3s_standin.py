#!/usr/bin/python3
"""A stand-in for the k3s binary on a lab host (k3s cannot be downloaded here): it records how it
was called and answers the few queries the roles and playbooks make. Simulated, and the tests
that use it say so.

- `k3s --version`                         this copy's version (VERSION below, set per copy)
- `k3s kubectl get node N -o jsonpath=...` Ready: "True", or "False" while the file
                                          /etc/k3s-standin/not-ready exists on this host
- `k3s kubectl get --raw /readyz/etcd`    "ok"
- `k3s kubectl cordon|uncordon|drain|label ...` what kubectl prints
- `k3s etcd-snapshot save --name N`       "Snapshot N-<host>-<time> saved.", and records whether
                                          AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY were in its
                                          environment (their sha256, never the values)
- `k3s server ...`                        k3s's unauthenticated supervisor endpoints over TLS on
                                          :6443: GET /ping -> "pong", GET /cacerts -> the CA
                                          bundle (/etc/k3s-standin/cacerts.pem); each request is
                                          recorded; its pid goes to /run/k3s-standin.pid

Every call is one JSON line in /var/lib/k3s-standin/journal.jsonl: time (ns), the version of
the copy that answered, argv.
"""

import hashlib
import http.server
import json
import os
import socket
import ssl
import sys
import time
from pathlib import Path

VERSION = "@VERSION@"
STATE = Path("/etc/k3s-standin")
JOURNAL = Path("/var/lib/k3s-standin/journal.jsonl")


def record(**extra):
    JOURNAL.parent.mkdir(parents=True, exist_ok=True)
    entry = {"ns": time.time_ns(), "version": VERSION, "argv": sys.argv[1:], **extra}
    with JOURNAL.open("a", encoding="utf-8") as journal:
        journal.write(json.dumps(entry) + "\n")


def digest(name):
    value = os.environ.get(name)
    return hashlib.sha256(value.encode()).hexdigest() if value else None


class Supervisor(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        record(request=self.path, peer=self.client_address[0])
        if self.path == "/ping":
            body = b"pong"
        elif self.path == "/cacerts":
            body = (STATE / "cacerts.pem").read_bytes()
        else:
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve():
    Path("/run/k3s-standin.pid").write_text(f"{os.getpid()}\n", encoding="utf-8")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(STATE / "tls.crt", STATE / "tls.key")
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 6443), Supervisor)  # noqa: S104
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def kubectl(args):
    if args[:2] == ["get", "node"] and any("Ready" in a for a in args):
        print("False" if (STATE / "not-ready").exists() else "True", end="")
    elif args[:2] == ["get", "--raw"]:
        print("ok", end="")
    elif args[:1] in (["cordon"], ["uncordon"]):
        print(f"node/{args[1]} {args[0]}ed")
    elif args[:1] == ["drain"]:
        print(f"node/{args[1]} drained")
    elif args[:1] == ["label"]:
        print(f"node/{args[2]} labeled")
    else:
        print(f"k3s-standin: kubectl {' '.join(args)}: not simulated", file=sys.stderr)
        return 1
    return 0


def main():
    args = sys.argv[1:]
    if args[:1] == ["server"]:
        record()
        serve()
        return 0
    if args == ["--version"]:
        record()
        print(f"k3s version {VERSION} (standin)\ngo version go1.23.8")
        return 0
    if args[:1] == ["kubectl"]:
        record()
        return kubectl(args[1:])
    if args[:2] == ["etcd-snapshot", "save"]:
        name = args[args.index("--name") + 1] if "--name" in args else "on-demand"
        record(
            aws_access_key_id=digest("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=digest("AWS_SECRET_ACCESS_KEY"),
        )
        snapshot = f"{name}-{socket.gethostname()}-{int(time.time())}"
        print(f'level=info msg="Snapshot {snapshot} saved."', file=sys.stderr)
        return 0
    record()
    print(f"k3s-standin: {' '.join(args)}: not simulated", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
