#!/usr/bin/env python3
"""A small Hugging Face cache written with huggingface_hub's own helpers, and what
huggingface_hub's scan_cache_dir and delete_revisions say about it, for tests/test_cache.cpp.

Written into OUT/hub (the cache) and OUT/scan.json:
  models--pivotmt-test--tiny: refs/main -> commit A (config.json as a git blob, an LFS
    model.safetensors, tokenizer/tokenizer.json in a subfolder); an older commit B that no ref
    names (detached) sharing model.safetensors with A and holding its own older config.json;
    a blob no snapshot links (an orphan); a .no_exist marker.
  datasets--pivotmt-test--data: refs/main and refs/v1 -> commit C (train.jsonl, LFS).
Blobs are named as the hub names them: git SHA-1 for regular files, SHA-256 for LFS files.
scan.json: per repo the id, type, size_on_disk, nb_files and refs, per revision its commit,
refs, nb_files and size_on_disk; and delete_revisions(B)'s expected freed size, blobs and
snapshots.

Development machine only (pip install huggingface_hub):

  python3 tests/goldens/make_hf_cache.py tests/goldens/hf_cache
"""
import hashlib
import json
import os
import shutil
import sys

from huggingface_hub import scan_cache_dir
from huggingface_hub.file_download import _create_symlink

COMMIT_A = "a" * 39 + "1"
COMMIT_B = "b" * 39 + "2"
COMMIT_C = "c" * 39 + "3"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(repo: str, commit: str, name: str, data: bytes, lfs: bool) -> None:
    blob = os.path.join(repo, "blobs", sha256(data) if lfs else git_sha1(data))
    os.makedirs(os.path.dirname(blob), exist_ok=True)
    if not os.path.exists(blob):
        with open(blob, "wb") as f:
            f.write(data)
    pointer = os.path.join(repo, "snapshots", commit, name)
    os.makedirs(os.path.dirname(pointer), exist_ok=True)
    _create_symlink(blob, pointer, new_blob=False)


def ref(repo: str, name: str, commit: str) -> None:
    path = os.path.join(repo, "refs", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(commit)


def main():
    out = sys.argv[1]
    cache = os.path.join(out, "hub")
    shutil.rmtree(cache, ignore_errors=True)
    model = os.path.join(cache, "models--pivotmt-test--tiny")
    weights = bytes(range(256)) * 40
    put(model, COMMIT_A, "config.json", b'{"model_type": "llama", "hidden_size": 64}\n', lfs=False)
    put(model, COMMIT_A, "model.safetensors", weights, lfs=True)
    put(model, COMMIT_A, "tokenizer/tokenizer.json", b'{"version": "1.0", "model": {"type": "BPE"}}\n' * 20, lfs=True)
    put(model, COMMIT_B, "config.json", b'{"model_type": "llama", "hidden_size": 32}\n', lfs=False)
    put(model, COMMIT_B, "model.safetensors", weights, lfs=True)
    ref(model, "main", COMMIT_A)
    orphan = b"an interrupted download's leftover, linked by no snapshot\n" * 10
    with open(os.path.join(model, "blobs", sha256(orphan)), "wb") as f:
        f.write(orphan)
    os.makedirs(os.path.join(model, ".no_exist", COMMIT_A), exist_ok=True)
    open(os.path.join(model, ".no_exist", COMMIT_A, "generation_config.json"), "w").close()

    data = os.path.join(cache, "datasets--pivotmt-test--data")
    put(data, COMMIT_C, "train.jsonl", b'{"hin": "a", "mar": "b", "gom": "c"}\n' * 30, lfs=True)
    ref(data, "main", COMMIT_C)
    ref(data, "v1", COMMIT_C)

    info = scan_cache_dir(cache)
    assert not info.warnings, info.warnings
    repos = []
    for r in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id)):
        repos.append({"id": r.repo_id, "type": r.repo_type, "size_on_disk": r.size_on_disk, "nb_files": r.nb_files,
                      "refs": sorted(r.refs),
                      "revisions": [{"commit": v.commit_hash, "refs": sorted(v.refs), "nb_files": v.nb_files,
                                     "size_on_disk": v.size_on_disk}
                                    for v in sorted(r.revisions, key=lambda v: v.commit_hash)]})
    strategy = info.delete_revisions(COMMIT_B)
    golden = {"size_on_disk": info.size_on_disk, "repos": repos,
              "delete_detached": {"expected_freed_size": strategy.expected_freed_size,
                                  "blobs": sorted(os.path.basename(b) for b in strategy.blobs),
                                  "snapshots": sorted(os.path.basename(s) for s in strategy.snapshots)},
              "orphan_blob": sha256(orphan), "orphan_size": len(orphan)}
    with open(os.path.join(out, "scan.json"), "w") as f:
        json.dump(golden, f, indent=1)


if __name__ == "__main__":
    main()
