"""A tiny ModelScope hub on 127.0.0.1 for pull tests (stdlib http.server in a thread).

Speaks what modelscope 1.40.2 / modelscope-hub 0.5.1 call for `snapshot_download(repo, revision=...,
local_dir=..., allow_patterns=...)` and `HubApi().legacy.list_repo_files`, read from their source
(modelscope_hub/_legacy_api.py, _download.py):

GET /api/v1/models/{owner}/{name}/repo/files?Revision=R&Recursive=True[&Root=dir]
    -> {"Code":200,"Success":true,"Data":{"Files":[{Name,Path,Type(blob|tree),Size,Sha256,
        Revision(per-file last commit),CommittedDate,IsLFS,...}]}}
GET /api/v1/models/{owner}/{name}/repo?Revision=R&FilePath=F   -> the bytes (LFS files: a 302 to
    /oss/... on this server, as the real hub redirects to OSS); Range -> 206 + Content-Range
GET /api/v1/repos/internalAccelerationInfo  -> 404 (the client's intra-cloud region probe)
Faults for tests: drop_once[file]=n closes the first body after n bytes; stall[file]=n sends n
bytes and holds the connection until release(); listing_body=bytes replaces the repo/files answer.
Anything else -> 404 and is recorded, so a test can assert nothing unexpected was asked.
Unknown revisions answer 404 {"Code":10010205001,...} like the real hub.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs, urlsplit

from tests.fixture_hub import LocalHTTPServer, send_body, send_json

HEAD = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"   # newest commit (touched config.json)
OLDER = "0fedcba9876543210fedcba9876543210fedcba9"  # commit that added the rest
BRANCHES = ("master",)
TAGS = ("v1.0",)


class FixtureModelScope(LocalHTTPServer):
    def __init__(self, repo: str, files: dict[str, bytes]) -> None:
        super().__init__()
        self.repo, self.files = repo, files
        self.list_sha256 = True  # the real hub lists Sha256 for every blob
        self.with_revisions = True  # ... and each file's last commit (Revision, CommittedDate)
        self._orig = dict(files)  # a file changed later gets a newer commit of its own
        self.listing_body: bytes | None = None

    def add(self, rel: str, data: bytes) -> None:
        """A file that was part of the repository from the start (not an edit)."""
        self.files[rel] = self._orig[rel] = data

    def _revisions(self) -> set[str]:
        """Branches, tags and every commit the listing names (fetchable like on the real hub)."""
        return {*BRANCHES, *TAGS, HEAD, OLDER, *(self._entry(r).get("Revision", HEAD) for r in self.files)}

    def file_gets(self) -> list[str]:
        """FilePath of every file download request (the /repo?FilePath= endpoint)."""
        out = []
        for m, p, _ in self.requests:
            u = urlsplit(p)
            if m == "GET" and u.path == f"/api/v1/models/{self.repo}/repo":
                out.append(parse_qs(u.query).get("FilePath", [""])[0])
        return out

    # ---- responses -------------------------------------------------------------------------
    def _entry(self, rel: str) -> dict:
        data = self.files[rel]
        newest = rel == "config.json"
        e = {"Name": rel.rsplit("/", 1)[-1], "Path": rel, "Type": "blob", "Size": len(data),
             "Revision": HEAD if newest else OLDER, "CommittedDate": 1700000500 if newest else 1700000000,
             "CommitMessage": "update config" if newest else "initial", "IsLFS": rel.endswith(".safetensors"),
             "Mode": "33188", "InCheck": False}
        if data != self._orig.get(rel):
            e.update(Revision=hashlib.sha1(data).hexdigest(), CommittedDate=1700001000, CommitMessage="edit")
        if not self.with_revisions:
            for k in ("Revision", "CommittedDate", "CommitMessage"):
                e.pop(k)
        if self.list_sha256:
            e["Sha256"] = hashlib.sha256(data).hexdigest()
        return e

    def _listing(self, root: str | None) -> list[dict]:
        out, dirs = [], set()
        for rel in self.files:
            if root and not rel.startswith(root.strip("/") + "/"):
                continue
            parts = rel.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
            out.append(self._entry(rel))
        for d in sorted(dirs):  # the real recursive listing includes tree entries
            out.append({"Name": d.rsplit("/", 1)[-1], "Path": d, "Type": "tree", "Size": 0,
                        "Revision": OLDER, "CommittedDate": 1700000000})
        return out

    def _not_found(self, h, msg, head=False):
        return send_json(h, {"Code": 10010205001, "Success": False, "Message": msg,
                              "RequestId": "fixture"}, 404, head)

    def _handle(self, h, head: bool) -> None:
        self.requests.append(("HEAD" if head else "GET", h.path, dict(h.headers)))
        u = urlsplit(h.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        base = f"/api/v1/models/{self.repo}"
        rev = q.get("Revision", "master")
        rev_ok = rev in self._revisions()
        if u.path == base + "/repo/files":
            if not rev_ok:
                return self._not_found(h, f"revision {rev} not found", head)
            if self.listing_body is not None:
                return send_body(h, self.listing_body, head=head)
            return send_json(h, {"Code": 200, "Success": True, "Message": "success", "RequestId": "fixture",
                                  "Data": {"Files": self._listing(q.get("Root")), "IsVisual": 0}}, head=head)
        if u.path == base + "/repo":
            rel = q.get("FilePath", "")
            if not rev_ok or rel not in self.files:
                return self._not_found(h, f"file {rel}@{rev} not found", head)
            if rel.endswith(".safetensors"):  # LFS objects are served by OSS behind a redirect
                h.send_response(302)
                h.send_header("Location", f"{self.url}/oss/{self.repo}/{rel}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            return self._send_file(h, rel, head)
        m = re.match(rf"^/oss/{re.escape(self.repo)}/(.+)$", u.path)
        if m and m.group(1) in self.files:
            return self._send_file(h, m.group(1), head)
        return self._not_found(h, f"no route {u.path}", head)

    def _send_file(self, h, rel: str, head: bool) -> None:
        self.send_file(h, rel, self.files[rel], head, {"Content-Type": "application/octet-stream"})
