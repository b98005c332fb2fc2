"""mitmproxy addon for bench/run.sh: send api.local to the upstream nginx (bench/peers) on 127.0.0.1:8443.

mitmproxy would otherwise resolve the CONNECT host (api.local) through DNS, which must never happen
here. Only the address is changed: the upstream SNI and name check stay api.local (they come from the
CONNECT host / client SNI), and the chain is verified against the bench root
(--set ssl_verify_upstream_trusted_ca=..., a wrong CA gives 502: checked by hand). Any other host is refused.
"""


class Route:
    def server_connect(self, data):
        host = data.server.address[0] if data.server.address else None
        if host == "api.local":
            data.server.address = ("127.0.0.1", 8443)
        else:
            data.server.error = f"bench: {host} is not routed (loopback only)"


addons = [Route()]
