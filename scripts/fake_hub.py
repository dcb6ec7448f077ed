# A local stand-in for the Hugging Face Hub, for tests/test_hub.cpp: the endpoints huggingface_hub and
# `mor download` use, served from a folder, on 127.0.0.1 only.
#   /api/{models|datasets}/{org}/{name}/revision/{rev}  -> {"id", "sha", "siblings": [{"rfilename"}]}
#   HEAD|GET /{org}/{name}/resolve/{rev}/{path}          (datasets: /datasets/{org}/{name}/resolve/...)
#     regular files: 200 with ETag "<git blob sha1>"; LFS files (.safetensors .parquet .model .bin):
#     302 to /lfs/... with X-Linked-Etag "<sha256>" and X-Linked-Size, as the Hub answers
#   GET /lfs/{type}/{org}/{name}/{path}                  the bytes, with HTTP Range (206)
# Repos are ROOT/{models|datasets}/{org}/{name}/...; the commit is sha1("commit " + type + "/" + repo id).
# Faults for the tests: --private REPO (401 without "Authorization: Bearer TOKEN"), --cut PATH (the first
# GET of that file sends half the body, then closes), --corrupt PATH (one byte flipped, headers intact).
# Every request is appended to --log as "METHOD PATH RANGE"; the bound port is written to --port-file.
# Run with Debian's python3: python3 scripts/fake_hub.py --root DIR --port-file F --log L [...]
import argparse
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

LFS_SUFFIXES = (".safetensors", ".parquet", ".model", ".bin")

args = None
lock = threading.Lock()
cut_done = set()


def commit_of(kind, repo):
    return hashlib.sha1(("commit " + kind + "/" + repo).encode()).hexdigest()


def repo_files(base):
    out = []
    for d, _, names in os.walk(base):
        for n in names:
            out.append(os.path.relpath(os.path.join(d, n), base).replace(os.sep, "/"))
    return sorted(out)


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def record(self):
        with lock, open(args.log, "a") as f:
            f.write("%s %s %s\n" % (self.command, self.path, self.headers.get("Range", "-")))

    def fail(self, code, error_code, message):
        body = json.dumps({"error": message}).encode()
        self.send_response(code)
        self.send_header("X-Error-Code", error_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # Splits /[datasets/]org/name/rest into (kind, repo, rest); checks the repo and its access.
    def repo(self, kind, parts):
        if len(parts) < 2:
            self.fail(404, "RepoNotFound", "Repository not found")
            return None
        repo = parts[0] + "/" + parts[1]
        base = os.path.join(args.root, kind + "s", parts[0], parts[1])
        if repo in args.private and self.headers.get("Authorization") != "Bearer " + args.token:
            self.fail(401, "RepoNotFound", "Invalid username or password.")
            return None
        if not os.path.isdir(base):
            self.fail(404, "RepoNotFound", "Repository not found")
            return None
        return repo, base, parts[2:]

    def do_HEAD(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def handle_any(self):
        self.record()
        path = unquote(self.path.split("?")[0])
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            kind = {"models": "model", "datasets": "dataset"}.get(parts[1])
            r = self.repo(kind, parts[2:]) if kind else None
            if r is None:
                if kind is None:
                    self.fail(404, "EntryNotFound", "no such endpoint")
                return
            repo, base, rest = r
            if rest[:1] != ["revision"] or rest[1:] != ["main"]:
                self.fail(404, "RevisionNotFound", "Revision not found")
                return
            body = json.dumps({"id": repo, "sha": commit_of(kind, repo),
                               "siblings": [{"rfilename": f} for f in repo_files(base)]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        if parts[:1] == ["lfs"] and len(parts) >= 4:
            kind = parts[1]
            r = self.repo(kind, parts[2:])
            if r is not None:
                self.serve_bytes(r[0], os.path.join(r[1], *r[2]), "/".join(r[2]))
            return
        kind = "model"
        if parts[:1] == ["datasets"]:
            kind, parts = "dataset", parts[1:]
        r = self.repo(kind, parts)
        if r is None:
            return
        repo, base, rest = r
        if len(rest) < 3 or rest[0] != "resolve":
            self.fail(404, "EntryNotFound", "no such endpoint")
            return
        if rest[1] not in ("main", commit_of(kind, repo)):
            self.fail(404, "RevisionNotFound", "Revision not found")
            return
        rel = "/".join(rest[2:])
        file = os.path.join(base, *rest[2:])
        if not os.path.isfile(file):
            self.fail(404, "EntryNotFound", "Entry not found")
            return
        data = open(file, "rb").read()
        if rel.endswith(LFS_SUFFIXES):
            self.send_response(302)
            self.send_header("Location", "/lfs/%s/%s/%s" % (kind, repo, rel))
            self.send_header("X-Linked-Etag", '"%s"' % hashlib.sha256(data).hexdigest())
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("X-Repo-Commit", commit_of(kind, repo))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.serve_bytes(repo, file, rel, etag=git_sha1(data), commit=commit_of(kind, repo))

    def serve_bytes(self, repo, file, rel, etag=None, commit=None):
        if not os.path.isfile(file):
            self.fail(404, "EntryNotFound", "Entry not found")
            return
        data = bytearray(open(file, "rb").read())
        if rel in args.corrupt and data:
            data[len(data) // 2] ^= 0xFF
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(data))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        else:
            self.send_response(200)
        if etag:
            self.send_header("ETag", '"%s"' % etag)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        body = bytes(data[start:])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        key = repo + "/" + rel
        with lock:
            cut = rel in args.cut and key not in cut_done and self.command == "GET"
            if cut:
                cut_done.add(key)
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--private", action="append", default=[])
    p.add_argument("--token", default="hf_test_token")
    p.add_argument("--cut", action="append", default=[])
    p.add_argument("--corrupt", action="append", default=[])
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
