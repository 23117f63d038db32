"""Whether a hub id can load is asked the way huggingface_hub is configured: HF_ENDPOINT, HF_HUB_OFFLINE.

A local HTTP server stands in for a hub mirror (nothing leaves this machine).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class NotFoundHub(BaseHTTPRequestHandler):
    """A mirror that answers every request: that repository does not exist here."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = b'{"error": "Repository not found"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFoundHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def available(tmp_path, **env) -> bool:
    """model_available() in a fresh process: huggingface_hub reads its configuration once, at import."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HTTP", "http"))}
    code = "import sys; from topreward.model.resolve import model_available; print(model_available('org/model'))"
    result = subprocess.run([sys.executable, "-c", code], env={**base, "HF_HOME": str(tmp_path), **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() == "True"


@pytest.mark.parametrize("offline", ["0", "False", "false", ""])
def test_a_mirror_that_answers_is_reachable_and_false_means_online(mirror, tmp_path, offline):
    assert available(tmp_path, HF_ENDPOINT=mirror, HF_HUB_OFFLINE=offline)


@pytest.mark.parametrize("offline", ["1", "True", "yes"])
def test_offline_means_offline(mirror, tmp_path, offline):
    assert not available(tmp_path, HF_ENDPOINT=mirror, HF_HUB_OFFLINE=offline)


def test_a_mirror_that_does_not_answer_is_unreachable(mirror, tmp_path):
    closed = mirror.rsplit(":", 1)[0] + ":1"  # nothing listens on port 1
    assert not available(tmp_path, HF_ENDPOINT=closed)


class Proxy(NotFoundHub):
    """A forward proxy in front of a hub: it records each request and answers as the hub's 404 would."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802
        Proxy.seen.append(f"{self.command} {self.path}")
        super().do_GET()

    def do_CONNECT(self):  # noqa: N802 (an https request through the proxy starts with CONNECT host:443)
        Proxy.seen.append(f"{self.command} {self.path}")
        self.send_response(502)
        self.end_headers()


def test_the_proxy_variables_are_honoured(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        no_bypass = {"NO_PROXY": "", "no_proxy": ""}
        # hub.invalid does not resolve: only a proxy can reach it.
        assert not available(tmp_path, HF_ENDPOINT="http://hub.invalid", **no_bypass)
        assert available(tmp_path, HF_ENDPOINT="http://hub.invalid", HTTP_PROXY=proxy, **no_bypass)
        assert Proxy.seen and Proxy.seen[-1].startswith("GET http://hub.invalid/")
        available(tmp_path, HF_ENDPOINT="https://hub.invalid", HTTPS_PROXY=proxy, **no_bypass)
        assert Proxy.seen[-1] == "CONNECT hub.invalid:443"  # asked through the proxy, not a socket of its own
    finally:
        server.shutdown()
        server.server_close()
