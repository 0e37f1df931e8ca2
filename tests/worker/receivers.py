"""Real receivers for alert deliveries, run inside the test: an SMTP server (aiosmtpd) and an HTTP
webhook receiver (http.server), each on a free local port, recording what they get."""

from __future__ import annotations

import email
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpReceiver:
    """``with SmtpReceiver() as smtp:`` ... ``smtp.messages`` (email.message.Message objects)."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        self.port = free_port()
        self.url = f"smtp://127.0.0.1:{self.port}"
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                message = email.message_from_bytes(envelope.content)
                message["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
                receiver.messages.append(message)
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *_):
        self.controller.stop()


class WebhookReceiver:
    """``with WebhookReceiver(fail_first=1) as hook:`` ... ``hook.calls`` (headers, JSON body);
    answers 500 to the first ``fail_first`` requests, 200 after."""

    def __init__(self, fail_first: int = 0):
        self.calls: list[tuple[dict, dict]] = []
        self.failures_left = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.failures_left > 0:
                    receiver.failures_left -= 1
                    self.send_response(500)
                else:
                    receiver.calls.append((dict(self.headers), body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_):
        self.server.shutdown()
        self.server.server_close()
