#!/usr/bin/env python3
"""The e2e "world": an HTTP(S) server bound to one address in the world netns.

  world_server.py ADDR PORT NAME [CERT KEY]

Every response is 200 with the body "world NAME PATH\n"; /slow?s=N first
sleeps N seconds (an in-flight request for the shutdown scenario). Each
request is logged with its peer address, so the transcript shows who
connected.
"""
import http.server
import socketserver
import ssl
import sys
import time
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/slow":
            secs = float(urllib.parse.parse_qs(url.query).get("s", ["2"])[0])
            time.sleep(min(secs, 30))
        body = f"world {self.server.name} {url.path}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s %s\n" % (time.strftime("%H:%M:%S"), self.client_address[0], fmt % args))
        sys.stdout.flush()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    addr, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    srv = Server((addr, port), Handler)
    srv.name = name
    if len(sys.argv) > 5:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[4], sys.argv[5])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(f"listening on {addr}:{port} as {name}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
