"""A deliberately plain webhook receiver: Python's http.server, which reads exactly
`Content-Length` bytes of a request body (and so sees an empty body if one is sent chunked),
checking each delivery with the `standardwebhooks` reference verifier.

Usage: plain_receiver.py SECRET LOG_FILE

Listens on 127.0.0.1 on a free port and prints it. For each POST it answers 204 if the
Standard Webhooks signature verifies, else 400, and appends one JSON line to LOG_FILE:
{"path", "verified", "error", "content_length", "transfer_encoding", "body"}.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

SECRET, LOG = sys.argv[1], sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            Webhook(SECRET).verify(body, {k.lower(): v for k, v in self.headers.items()})
            verified, error = True, None
        except Exception as e:  # the verifier's own reason, whatever it is
            verified, error = False, f"{type(e).__name__}: {e}"
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps({
                "path": self.path, "verified": verified, "error": error,
                "content_length": self.headers.get("Content-Length"),
                "transfer_encoding": self.headers.get("Transfer-Encoding"),
                "body": body.decode("utf-8", "replace"),
            }) + "\n")
        self.send_response(204 if verified else 400)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
