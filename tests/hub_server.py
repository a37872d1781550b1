"""A loopback stand-in for the Hugging Face Hub API, enough for push_to_hub / from_pretrained tests.

Standard library only: ``http.server`` in a thread on 127.0.0.1, port 0; repos live in memory. It answers
the requests huggingface_hub 2.4.0 makes for ``create_repo``, ``upload_folder`` (including the xet-era
pipelined upload, which still commits "regular" files inline), ``hf_hub_download``, ``snapshot_download``
and ``repo_info``:

    POST /api/repos/create                                   create (409 + url if it exists)
    POST /api/models/{repo}/preupload/{rev}                  every file "regular"
    POST /api/models/{repo}/commit/{rev}                     NDJSON: header, file (base64), deletedFile
    GET  /api/models/{repo}[/revision/{rev}]                 repo info with siblings
    GET  /api/models/{repo}/tree/{rev}[/{path}]              file listing
    POST /api/validate-yaml                                  always valid
    GET  /api/agent-harnesses                                empty registry (User-Agent agent detection)
    HEAD/GET /{repo}/resolve/{rev}/{file}                    X-Repo-Commit, ETag, Content-Length

Anything else is answered 404 and recorded in ``server.unknown`` so that a test can show what a new
huggingface_hub version started to call. Use the ``hub_server`` fixture (import it into a test module):
it points huggingface_hub at the server, turns offline mode off, and moves every Hub cache and token path
into ``tmp_path`` for the duration of one test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?P<rest>/.*)?$")


def git_blob_sha1(data: bytes) -> str:
    """What the Hub uses as ETag for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> snapshot
    branches: dict[str, str] = field(default_factory=dict)  # branch -> sha
    messages: list[str] = field(default_factory=list)

    def snapshot(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        sha = self.branches.get(rev, rev)
        return (sha, self.commits[sha]) if sha in self.commits else None


class HubServer:
    """In-memory Hub. ``start()`` / ``stop()``, or use as a context manager; ``url`` is the endpoint."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.unknown: list[tuple[str, str]] = []  # requests nothing here answers
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- state changes (also usable directly by tests) ---------------------------------------------------
    def create_repo(self, repo_id: str) -> bool:
        """True if created, False if it existed."""
        with self.lock:
            if repo_id in self.repos:
                return False
            repo = self.repos[repo_id] = Repo()
            sha = hashlib.sha1(f"{repo_id}:init".encode()).hexdigest()
            repo.commits[sha] = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
            repo.branches["main"] = sha
            return True

    def commit(self, repo_id: str, branch: str, files: dict[str, bytes], deleted: list[str], message: str) -> str:
        with self.lock:
            repo = self.repos[repo_id]
            parent = repo.branches.get(branch, repo.branches["main"])
            snapshot = dict(repo.commits[parent])
            for path in deleted:
                snapshot.pop(path, None)
            snapshot.update(files)
            sha = hashlib.sha1(f"{parent}:{len(repo.commits)}:{message}".encode()).hexdigest()
            repo.commits[sha] = snapshot
            repo.branches[branch] = sha
            repo.messages.append(message)
            return sha

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        return dict(self.repos[repo_id].snapshot(rev)[1])


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive; every response below sets Content-Length

    def log_message(self, format, *args) -> None:  # quiet: pytest shows failures, not access logs
        pass

    # --- plumbing -------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": len(body), **(headers or {})}.items():  # HEAD: the GET's length
            self.send_header(key, str(value))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None, head: bool = False) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

    def _error(self, status: int, code: str | None, message: str, head: bool = False, extra: dict | None = None):
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers, head)

    def _path(self) -> str:
        return unquote(urlsplit(self.path).path)

    def _dispatch(self, method: str) -> None:
        path = self._path()
        self.hub.requests.append((method, path))
        body = self._body() if method in ("POST", "PUT", "DELETE") else b""
        for handler in (self._resolve, self._create, self._api):
            if handler(method, path, body):
                return
        self.hub.unknown.append((method, path))
        self._error(404, None, f"loopback hub: no route for {method} {path}", head=method == "HEAD")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    # --- routes ---------------------------------------------------------------------------------------------
    def _resolve(self, method: str, path: str, body: bytes) -> bool:
        m = _RESOLVE.match(path)
        if not m or method not in ("HEAD", "GET"):
            return False
        head = method == "HEAD"
        repo = self.hub.repos.get(m["repo"])
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head)
            return True
        found = repo.snapshot(m["rev"])
        if found is None:
            self._error(404, "RevisionNotFound", "Invalid rev id", head)
            return True
        sha, snapshot = found
        if m["path"] not in snapshot:
            self._error(404, "EntryNotFound", "Entry not found", head, {"X-Repo-Commit": sha})
            return True
        data = snapshot[m["path"]]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(data)}"', "Content-Type": "application/octet-stream"}
        start = 0
        range_header = self.headers.get("Range", "")
        if range_header.startswith("bytes=") and not head:  # resumed downloads: "bytes=N-"
            start = int(range_header[6:].split("-")[0] or 0)
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if head:
            headers["Content-Length"] = str(len(data))
        self._send(206 if start else 200, data[start:], headers, head)
        return True

    def _create(self, method: str, path: str, body: bytes) -> bool:
        if (method, path) == ("POST", "/api/validate-yaml"):
            self._json(200, {"errors": [], "warnings": []})
            return True
        if (method, path) == ("GET", "/api/agent-harnesses"):  # fetched once per process for the User-Agent
            self._json(200, {"standardEnvVars": [], "harnesses": {}})
            return True
        if (method, path) != ("POST", "/api/repos/create"):
            return False
        payload = json.loads(body or b"{}")
        if payload.get("type", "model") != "model":
            self._error(400, None, "loopback hub: only model repos")
            return True
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        url = f"{self.hub.url}/{repo_id}"
        if self.hub.create_repo(repo_id):
            self._json(200, {"url": url, "name": repo_id, "id": repo_id})
        else:
            self._json(409, {"error": "You already created this model repo", "url": url})
        return True

    def _api(self, method: str, path: str, body: bytes) -> bool:
        m = _API.match(path)
        if not m:
            return False
        repo_id, rest = m["repo"], m["rest"] or ""
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", method == "HEAD")
            return True
        parts = rest.strip("/").split("/", 2) if rest else []
        action = parts[0] if parts else "info"
        rev = parts[1] if len(parts) > 1 else "main"
        if method == "POST" and action == "preupload":
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            self._json(200, {"files": modes})
        elif method == "POST" and action == "commit":
            self._commit(repo_id, rev, body)
        elif method == "GET" and action in ("info", "revision", "tree"):
            found = repo.snapshot(rev)
            if found is None:
                self._error(404, "RevisionNotFound", "Invalid rev id")
                return True
            sha, snapshot = found
            if action == "tree":
                prefix = parts[2].strip("/") + "/" if len(parts) > 2 else ""
                entries = [
                    {"type": "file", "path": p, "size": len(d), "oid": git_blob_sha1(d)}
                    for p, d in sorted(snapshot.items())
                    if p.startswith(prefix)
                ]
                self._json(200, entries)
            else:
                self._json(200, {
                    "id": repo_id, "modelId": repo_id, "sha": sha, "private": False, "disabled": False,
                    "gated": False, "tags": [], "downloads": 0, "likes": 0,
                    "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(snapshot.items())],
                })
        else:
            return False
        return True

    def _commit(self, repo_id: str, rev: str, body: bytes) -> None:
        files, deleted, message = {}, [], ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", "")
            elif key == "file":
                content = value["content"]
                base64_encoded = value.get("encoding") == "base64"
                files[value["path"]] = base64.b64decode(content) if base64_encoded else content.encode()
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:  # lfsFile: we never asked for LFS uploads, so there is no content to commit
                self._error(400, None, f"loopback hub: unsupported commit operation {key!r}")
                return
        sha = self.hub.commit(repo_id, rev, files, deleted, message)
        self._json(200, {"success": True, "commitOid": sha, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}",
                         "pullRequestUrl": None})


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A running HubServer with huggingface_hub pointed at it, online, caches and tokens under tmp_path.

    huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and the cache/token paths into ``constants`` at import
    time, so setting environment variables is not enough: the constants themselves are patched too.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    with HubServer() as server:
        # Every path constant under the real HF_HOME (caches, token files, the agent-registry cache...)
        # moves under tmp_path, plus the caches that have their own variables.
        real_home = constants.HF_HOME
        for name, value in list(vars(constants).items()):
            under_home = isinstance(value, str) and (value == real_home or value.startswith(real_home + os.sep))
            if name.isupper() and under_home:
                monkeypatch.setattr(constants, name, str(home) + value[len(real_home):])
        paths = {"HF_HOME": home, "HF_HUB_CACHE": home / "hub", "HF_ASSETS_CACHE": home / "assets",
                 "HF_XET_CACHE": home / "xet"}
        for name, value in paths.items():
            monkeypatch.setenv(name, str(value))
            monkeypatch.setattr(constants, name, str(value))
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_loopback_test_token")  # never a real token
        monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
        yield server
