"""A webhook receiver on loopback, for the tests of callbacks."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.servers import free_port


class Receiver:
    """A webhook receiver on loopback: answers the first POST ``first_status`` (500 by
    default), later ones 204, each after ``delay`` seconds."""

    def __init__(self, *, first_status: int = 500, delay: float = 0.0) -> None:
        self.calls: list[tuple[int, dict[str, str], bytes]] = []
        #: POSTs received, answered or not (still waiting out ``delay``).
        self.arrived = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived += 1
                time.sleep(delay)
                status = first_status if not receiver.calls else 204
                receiver.calls.append((status, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
