#!/usr/bin/env python3
"""A client looping through a pins change (scenario 3), inside the app
container: GET http://HOST/loop for each HOST through HTTP_PROXY, every
0.2 s, for at most SECONDS or until /tmp/loop.stop exists. One line per
request: "<unix time> <host> <status> <x-pinproxy-error or exception>".

  loop_client.py SECONDS HOST...
"""
import os
import sys
import time
import urllib.error
import urllib.request


def main():
    end = time.time() + float(sys.argv[1])
    hosts = sys.argv[2:]
    while time.time() < end and not os.path.exists("/tmp/loop.stop"):
        for host in hosts:
            t = time.time()
            try:
                with urllib.request.urlopen(f"http://{host}/loop", timeout=5) as r:
                    code, why = r.status, ""
            except urllib.error.HTTPError as e:
                code, why = e.code, e.headers.get("x-pinproxy-error", "")
            except Exception as e:  # noqa: BLE001 - every failure is a line
                code, why = 0, type(e).__name__
            print(f"{t:.3f} {host} {code} {why}", flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
