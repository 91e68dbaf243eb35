"""The S3 side of ``python -m bench.throughput --remote``, in a process of its own.

``python -m bench._remote_server LATENCY_MS`` starts a moto S3 server on
127.0.0.1 and, in front of it, a reverse proxy on 127.0.0.1 that sleeps
``LATENCY_MS`` before forwarding each request (loopback only; one thread per
connection), prints ``{"host": ..., "port": ...}`` (the proxy) as one JSON
line, then answers each line ``count`` on stdin with the number of requests
the proxy has served so far, and stops when stdin closes.

Why a process of its own: a server in the benchmark's process shares that
process's interpreter lock with the consumer it feeds — every request moto and
the proxy handle would take time from the loader being measured, and theirs
from it — which no real object store does.
"""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import sys
import threading
import time
from typing import Any

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class _LatencyProxy(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: tuple[str, int], latency_s: float) -> None:
        self.upstream = upstream
        self.latency_s = latency_s
        self.requests = 0
        self.gets: list[str] = []  # paths of the GET requests, in order
        self._count = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _LatencyProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        server = self.server
        with server._count:
            server.requests += 1
            if self.command == "GET":
                server.gets.append(self.path)
        time.sleep(server.latency_s)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        upstream = http.client.HTTPConnection(*server.upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
        finally:
            upstream.close()
        self.send_response(reply.status, reply.reason)
        for key, value in reply.getheaders():
            if key.lower() not in _HOP and key.lower() != "content-length":
                self.send_header(key, value)
        # a HEAD reply has no body but the object's length (s3fs reads sizes from it)
        length = reply.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


def main(argv: list[str] | None = None) -> int:
    from moto.server import ThreadedMotoServer

    args = sys.argv[1:] if argv is None else argv
    latency_s = float(args[0]) / 1e3
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    proxy = _LatencyProxy(moto.get_host_and_port(), latency_s)
    serving = threading.Thread(target=proxy.serve_forever, name="bench-proxy", daemon=True)
    serving.start()
    try:
        host, port = proxy.server_address[:2]
        print(json.dumps({"host": host, "port": port}), flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                print(proxy.requests, flush=True)
    finally:
        proxy.shutdown()
        proxy.server_close()
        moto.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
