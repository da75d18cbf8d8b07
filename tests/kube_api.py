"""A stand-in for the one Kubernetes API call a worker makes (``EVENTFLEET_REJOIN_CHECK=
kubernetes``): GET a StatefulSet's ``scale`` over TLS with a bearer token. It serves the
replica count the test sets, and records each request, so the real worker code (urllib, TLS
verification against the service-account CA, the token) runs unchanged."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOKEN = "test-service-account-token"


@dataclass
class KubeApi:
    """``replicas`` per StatefulSet name; ``refuse`` answers 403 to every request."""

    namespace: str
    sa_dir: Path
    url: str = ""
    replicas: dict[str, int] = field(default_factory=dict)
    refuse: bool = False
    requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def env(self) -> dict[str, str]:
        return {
            "EVENTFLEET_REJOIN_CHECK": "kubernetes",
            "EVENTFLEET_KUBE_API_URL": self.url,
            "EVENTFLEET_KUBE_SA_DIR": str(self.sa_dir),
        }

    def answer(self, path: str, auth: str) -> tuple[int, dict[str, Any]]:
        self.requests.append(path)
        prefix = f"/apis/apps/v1/namespaces/{self.namespace}/statefulsets/"
        name = path.removeprefix(prefix).removesuffix("/scale")
        if self.refuse or auth != f"Bearer {TOKEN}":
            return 403, {"kind": "Status", "reason": "Forbidden"}
        if not path.startswith(prefix) or not path.endswith("/scale") or name not in self.replicas:
            return 404, {"kind": "Status", "reason": "NotFound"}
        spec = {"replicas": self.replicas[name]} if self.replicas[name] else {}  # omitempty
        return 200, {"kind": "Scale", "apiVersion": "autoscaling/v1", "spec": spec}

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def start_kube_api(workdir: Path, namespace: str) -> KubeApi:
    """A TLS server on 127.0.0.1 with a self-signed certificate, and a service-account
    directory (token, ca.crt, namespace) as a pod would have it."""
    sa = workdir / "serviceaccount"
    sa.mkdir(parents=True)
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is not installed: apt-get install -y openssl"
    subprocess.run(
        [openssl, "req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-keyout", str(workdir / "api.key"), "-out",
         str(sa / "ca.crt"), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    (sa / "token").write_text(TOKEN + "\n", encoding="utf-8")
    (sa / "namespace").write_text(namespace, encoding="utf-8")
    api = KubeApi(namespace, sa)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = api.answer(self.path, self.headers.get("Authorization", ""))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sa / "ca.crt", workdir / "api.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api._server = server
    api.url = f"https://127.0.0.1:{server.server_address[1]}"
    return api
