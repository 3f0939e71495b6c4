"""A real OCI registry on 127.0.0.1 (CNCF distribution, built from its Go module by tools.py).

    hack/local-cluster registry up|down|status

The release (hack/release --push) is pushed there as a user pushes to theirs, and the local cluster's containerd
pulls from it (render.py writes its hosts.toml: plain HTTP, loopback only). Storage lives in the cache, so a
pushed release survives `down`; `registry down --wipe` forgets it.
"""

from __future__ import annotations

import json
import shutil
import urllib.request

from . import config as C
from . import tools
from .procs import pid_of, say, spawn, stop, wait_for

STORAGE = C.CACHE / "registry"
CONFIG = C.RUN / "registry" / "config.yml"


def url(path: str = "/v2/") -> str:
    return f"http://{C.REGISTRY_ADDR}{path}"


def answering() -> bool:
    try:
        with urllib.request.urlopen(url(), timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def up() -> str:
    """Start it (once); returns HOST:PORT."""
    if pid_of("registry") and answering():
        return C.REGISTRY_ADDR
    binary = tools.ensure("registry")
    STORAGE.mkdir(parents=True, exist_ok=True)
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    # JSON is YAML: the registry's whole configuration, loopback only, deletes allowed (tests clean up).
    CONFIG.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(STORAGE)}, "delete": {"enabled": True}},
                "http": {"addr": C.REGISTRY_ADDR},
            }
        )
    )
    say(f"starting the local registry on {C.REGISTRY_ADDR} (storage {STORAGE})")
    spawn("registry", [binary, "serve", CONFIG])
    wait_for("registry", answering, 30, f"answering on {url()}")
    return C.REGISTRY_ADDR


def down(wipe: bool = False) -> None:
    stop("registry")
    if wipe:
        shutil.rmtree(STORAGE, ignore_errors=True)


def catalog() -> list:
    with urllib.request.urlopen(url("/v2/_catalog"), timeout=5) as r:
        return json.load(r).get("repositories", [])


def status() -> int:
    if pid_of("registry") and answering():
        print(f"registry on {C.REGISTRY_ADDR}: {', '.join(catalog()) or 'empty'}")
        return 0
    print("registry: down")
    return 1
