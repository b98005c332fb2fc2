"""HTTP/3 over QUIC for the lock's tests, with aioquic (scripts/test.sh
installs it, pinned, into target/py-venv).

    quic.py server CERT KEY PORT
        An HTTP/3 server on [::]:PORT (dual stack) answering every request
        with "h3 ok path=PATH". Prints "ready", serves until stdin closes.

    quic.py client ADDR NAME CAFILE [--fallback]
        An HTTP/3 GET https://NAME/h3 sent to ADDR:443 over a *connected*
        UDP socket, as browsers, curl (ngtcp2, quiche) and Go's quic-go do,
        so an ICMP port-unreachable surfaces as ECONNREFUSED. Then, with
        --fallback and unless HTTP/3 worked, the same GET over TCP (TLS,
        HTTP/1.1) to ADDR:443: a client's fallback. Prints one JSON object:
        {"quic": "ok"|"refused"|"timeout"|"closed", "quic_body": …,
         "error": "EPERM"|"ECONNREFUSED" (refused), "tcp": "ok"|"error",
         "tcp_body": …}. A datagram the kernel refuses in OUTPUT fails
        sendto with EPERM; the ICMP error of a REJECT reaches the socket as
        ECONNREFUSED.
"""

import asyncio
import json
import socket
import ssl
import sys
import time

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted

# Long enough that a client stopped by a timeout cannot be mistaken for one
# refused by ICMP (which fails on the first read).
QUIC_TIMEOUT = 8.0


class H3Server(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)

    def quic_event_received(self, event):
        for ev in self._h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                path = dict(ev.headers).get(b":path", b"/").decode()
                body = f"h3 ok path={path}\n".encode()
                self._h3.send_headers(
                    ev.stream_id,
                    [(b":status", b"200"), (b"content-length", str(len(body)).encode())],
                )
                self._h3.send_data(ev.stream_id, body, end_stream=True)
                self.transmit()


async def server(cert, key, port):
    cfg = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    cfg.load_cert_chain(cert, key)
    await serve("::", port, configuration=cfg, create_protocol=H3Server)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def h3_get(addr, name, cafile):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=name)
    cfg.load_verify_locations(cafile)
    conn = QuicConnection(configuration=cfg)
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.connect((addr, 443))
    peer = sock.getpeername()
    h3 = H3Connection(conn)
    conn.connect(peer, now=time.time())
    deadline = time.monotonic() + QUIC_TIMEOUT
    stream, body = None, b""
    try:
        while True:
            for data, _ in conn.datagrams_to_send(now=time.time()):
                sock.send(data)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {"quic": "timeout"}
            timer = conn.get_timer()
            wait = remaining if timer is None else min(remaining, max(timer - time.time(), 0.001))
            sock.settimeout(wait)
            try:
                conn.receive_datagram(sock.recv(65536), peer, now=time.time())
            except socket.timeout:
                timer = conn.get_timer()
                if timer is not None and time.time() >= timer:
                    conn.handle_timer(now=time.time())
            event = conn.next_event()
            while event is not None:
                if isinstance(event, HandshakeCompleted) and stream is None:
                    stream = conn.get_next_available_stream_id()
                    h3.send_headers(stream, [
                        (b":method", b"GET"), (b":scheme", b"https"),
                        (b":authority", name.encode()), (b":path", b"/h3"),
                    ], end_stream=True)
                if isinstance(event, ConnectionTerminated):
                    return {"quic": "closed", "quic_body": event.reason_phrase}
                for ev in h3.handle_event(event):
                    if isinstance(ev, DataReceived):
                        body += ev.data
                    if isinstance(ev, (DataReceived, HeadersReceived)) and ev.stream_ended:
                        return {"quic": "ok", "quic_body": body.decode(errors="replace")}
                event = conn.next_event()
    except ConnectionRefusedError:
        # The ICMP port-unreachable, reported on the connected socket.
        return {"quic": "refused", "error": "ECONNREFUSED"}
    except PermissionError:
        # The kernel refused the datagram in OUTPUT (a REJECT or DROP rule):
        # sendto fails at once.
        return {"quic": "refused", "error": "EPERM"}
    finally:
        sock.close()


def tcp_get(addr, name, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        with socket.create_connection((addr, 443), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname=name) as t:
                t.sendall(f"GET /fallback HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while True:
                    chunk = t.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        return {"tcp": "ok", "tcp_body": data.decode(errors="replace")}
    except OSError as e:
        return {"tcp": "error", "tcp_body": str(e)}


def main():
    mode = sys.argv[1]
    if mode == "server":
        asyncio.run(server(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif mode == "client":
        addr, name, cafile = sys.argv[2], sys.argv[3], sys.argv[4]
        result = h3_get(addr, name, cafile)
        if "--fallback" in sys.argv[5:] and result["quic"] != "ok":
            result.update(tcp_get(addr, name, cafile))
        print(json.dumps(result), flush=True)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
