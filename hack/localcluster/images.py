"""Images without a registry.

- pause: a static C program in a one-layer OCI archive, imported into the cluster's containerd.
- the Python base: a Debian root filesystem made with debootstrap, imported into a dockerd of the harness's own.
- the project's images: `docker build` of the project's own Dockerfiles on that base (the Dockerfiles users
  build), with Python packages from a wheelhouse made on the host (builds need no network), then
  `docker save | ctr images import` into the cluster.
All outputs are cached under ~/.cache/daemonpool.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

from . import config as C
from .host import unmount_under
from .procs import ctr, pid_of, say, spawn, stop, wait_for

DOCKER = "/usr/bin/docker"  # from Debian's docker.io, which install.py installs
DOCKER_SOCK = C.RUN / "docker" / "docker.sock"
DOCKER_ROOT = C.CACHE / "docker"
WHEELS = C.ROOT / ".wheels"

PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void down(int s) { (void)s; exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, down); signal(SIGTERM, down); signal(SIGCHLD, reap);
  for (;;) pause();
}
"""


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_archive(out: pathlib.Path, name: str, layer: bytes, config: dict) -> None:
    """Write an OCI image-layout tar with one uncompressed layer; containerd imports it by name."""
    diff_id = _sha(layer)
    cfg = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": config, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(cfg), "size": len(cfg)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": len(layer)}],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _sha(manifest),
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                    },
                }
            ],
        }
    ).encode()
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as t:
        for path, data in (
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index),
            (f"blobs/sha256/{_sha(cfg)[7:]}", cfg),
            (f"blobs/sha256/{_sha(manifest)[7:]}", manifest),
            (f"blobs/sha256/{diff_id[7:]}", layer),
        ):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)


def pause_archive() -> pathlib.Path:
    out = C.IMAGES / "pause.tar"
    if out.exists():
        return out
    C.IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp, "pause.c")
        src.write_text(PAUSE_C)
        subprocess.run(["gcc", "-static", "-Os", "-o", f"{tmp}/pause", str(src)], check=True)
        subprocess.run(["strip", f"{tmp}/pause"], check=False)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            t.add(f"{tmp}/pause", arcname="pause")
        oci_archive(out, C.PAUSE_IMAGE, buf.getvalue(), {"Entrypoint": ["/pause"], "User": "65535:65535"})
    return out


def has_image(name: str) -> bool:
    """``name`` fully qualified (as containerd lists it), e.g. registry.k8s.io/pause:daemonpool."""
    return name in ctr("images", "ls", "-q", check=False).stdout.split()


def ensure_pause_loaded() -> None:
    if not has_image(C.PAUSE_IMAGE):
        ctr("images", "import", pause_archive())


def load_image(archive: str) -> str:
    """Import an image archive (docker save or OCI layout, optionally gzip) into the cluster's containerd."""
    path = pathlib.Path(archive)
    if not path.exists():
        raise SystemExit(f"load-image: {archive} does not exist")
    if path.suffix in (".gz", ".tgz"):
        with tempfile.NamedTemporaryFile(suffix=".tar", delete=False) as tmp, gzip.open(path) as src:
            shutil.copyfileobj(src, tmp)
        try:
            return ctr("images", "import", "--no-unpack=false", tmp.name).stdout
        finally:
            os.unlink(tmp.name)
    return ctr("images", "import", path).stdout


# -- the Python base and dockerd -------------------------------------------------------


def debootstrap_tar(out: pathlib.Path, packages: list[str], what: str, trim: tuple = ()) -> pathlib.Path:
    """A Debian bookworm root filesystem (minbase plus ``packages``, docs and apt lists trimmed, and ``trim``)
    as a tar at ``out``; the caller decides whether a cached one will do."""
    C.IMAGES.mkdir(parents=True, exist_ok=True)
    say(f"building the {what} root filesystem with debootstrap (about a minute, once)")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=C.CACHE) as tmp:
        root = pathlib.Path(tmp, "rootfs")
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                "bookworm",
                str(root),
                "http://deb.debian.org/debian",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for junk in (
            "usr/share/doc",
            "usr/share/man",
            "usr/share/info",
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            *trim,
        ):
            shutil.rmtree(root / junk, ignore_errors=True)
            (root / junk).mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(out) + ".tmp", "."], check=True)
        os.replace(str(out) + ".tmp", out)
    say(f"{what} root filesystem ready in {time.monotonic() - t0:.0f}s ({out.stat().st_size >> 20} MiB)")
    return out


def base_rootfs_tar() -> pathlib.Path:
    out = C.IMAGES / "python-base-bookworm.tar"
    if out.exists():
        return out
    return debootstrap_tar(out, ["python3", "python3-pip", "ca-certificates"], "Python base", ("usr/share/locale",))


def docker(*args, check=True, capture=True, timeout=1800, **kw):
    return subprocess.run(
        [DOCKER, "-H", f"unix://{DOCKER_SOCK}", *map(str, args)],
        check=check,
        capture_output=capture,
        text=True,
        timeout=timeout,
        **kw,
    )


# dockerd's runtime: runc, minus the capabilities this machine's bounding set lacks. Docker 20.10 gives a
# --privileged container (every kind node) all capabilities it knows of, and runc refuses to apply one the
# VM withholds (CAP_SYS_RESOURCE): "unable to apply caps: operation not permitted".


def docker_up() -> None:
    if pid_of("dockerd"):
        return
    DOCKER_SOCK.parent.mkdir(parents=True, exist_ok=True)
    DOCKER_ROOT.mkdir(parents=True, exist_ok=True)
    wrapper = C.RUN / "docker" / "runc"
    wrapper.write_text((C.HACK / "localcluster" / "templates" / "runc-wrapper").read_text())
    wrapper.chmod(0o755)
    say("starting a dockerd of the harness's own (builds only; no bridge, no iptables)")
    spawn(
        "dockerd",
        [
            "dockerd",
            "--data-root",
            DOCKER_ROOT,
            "--exec-root",
            C.RUN / "docker" / "exec",
            "--pidfile",
            C.RUN / "docker" / "dockerd.pid",
            "-H",
            f"unix://{DOCKER_SOCK}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--storage-driver=overlay2",
            "--add-runtime",
            f"daemonpool-runc={wrapper}",
            "--default-runtime=daemonpool-runc",
        ],
    )
    wait_for(
        "dockerd", lambda: docker("version", check=False, timeout=10).returncode == 0, 60, "answering", watch_pid=False
    )


def docker_down() -> None:
    stop("dockerd", grace=20)
    unmount_under(DOCKER_ROOT, C.RUN / "docker")


def ensure_base_in_docker() -> None:
    if docker("image", "inspect", C.BASE_IMAGE, check=False).returncode == 0:
        return
    tar = base_rootfs_tar()
    docker(
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        'CMD ["python3"]',
        tar,
        C.BASE_IMAGE,
    )


def wheelhouse() -> pathlib.Path:
    """Wheels of the project and its dependencies, made on the host where PyPI is reachable."""
    WHEELS.mkdir(exist_ok=True)
    stamp = WHEELS / ".stamp"
    key = hashlib.sha256((C.ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text() == key):
        say("filling the wheelhouse (.wheels/) for offline image builds")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "-d", str(WHEELS), *build_requirements(), "wheel"],
            check=True,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "-d",
                str(WHEELS),
                "--only-binary=:all:",
                *image_requirements(),
            ],
            check=True,
        )
        stamp.write_text(key)
    return WHEELS


def build_requirements() -> list:
    """What pip needs to build the project in an image (pyproject.toml's build-system; the one place that pins)."""
    import tomllib  # noqa: PLC0415 - Python 3.11+, only needed when building images

    return list(tomllib.loads((C.ROOT / "pyproject.toml").read_text())["build-system"]["requires"])


def image_requirements() -> list:
    """What the images install, read from pyproject.toml (the one place that pins): the operator extra, and
    the mailer's PostgreSQL driver from the test extra."""
    import tomllib  # noqa: PLC0415 - Python 3.11+, only needed when building images

    extras = tomllib.loads((C.ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return list(extras["operator"]) + [r for r in extras["test"] if r.startswith("psycopg")]


def build(dockerfile: str, tag: str, build_args: dict | None = None) -> str:
    """docker build a project Dockerfile on the local base (offline: the wheelhouse); returns the tag."""
    docker_up()
    ensure_base_in_docker()
    wheelhouse()
    args = {"BASE": C.BASE_IMAGE, "PIP_INSTALL_ARGS": "--no-index --find-links /src/.wheels", **(build_args or {})}
    cmd = ["build", "--network", "none", "-f", str(C.ROOT / dockerfile), "-t", tag]
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    say(f"docker build {dockerfile} -> {tag}")
    r = docker(*cmd, str(C.ROOT), check=False, env=dict(os.environ, DOCKER_BUILDKIT="0"))
    if r.returncode:
        raise RuntimeError(f"docker build of {dockerfile} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return tag


def build_image(dockerfile: str, tag: str, build_args: dict | None = None) -> str:
    """build(), then import the image into the cluster's containerd; returns the tag."""
    t0 = time.monotonic()
    build(dockerfile, tag, build_args)
    C.IMAGES.mkdir(parents=True, exist_ok=True)
    archive = C.IMAGES / (tag.replace("/", "_").replace(":", "_") + ".tar")
    docker("save", "-o", archive, tag)
    ctr("images", "import", archive)
    size = docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip()
    say(f"built and loaded {tag} in {time.monotonic() - t0:.0f}s ({int(size) >> 20} MiB)")
    return tag


def oci_layout_from_docker_save(saved: pathlib.Path, out: pathlib.Path, name: str) -> str:
    """A `docker save` archive -> an OCI image layout tar (gzip layers), named ``name``; returns the manifest digest.

    Docker 20.10 (Debian's) saves its own format; the release ships OCI layouts, which `ctr images import`
    (tests/cluster/test_release.py), `skopeo copy oci-archive:` and `kind load image-archive` read.
    """
    with tarfile.open(saved) as t:
        (entry,) = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = t.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        blobs: dict[str, bytes] = {}
        layers = []
        for layer in entry["Layers"]:
            data = gzip.compress(t.extractfile(layer).read(), compresslevel=3, mtime=0)  # type: ignore[union-attr]
            digest = _sha(data)
            blobs[digest] = data
            layers.append(
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": len(data)}
            )
    cfg_digest = _sha(config)
    blobs[cfg_digest] = config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cfg_digest,
                "size": len(config),
            },
            "layers": layers,
        }
    ).encode()
    man_digest = _sha(manifest)
    blobs[man_digest] = manifest
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": man_digest,
                    "size": len(manifest),
                    "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
                }
            ],
        }
    ).encode()
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w") as t:
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
        files.update({f"blobs/sha256/{d.split(':', 1)[1]}": b for d, b in blobs.items()})
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    return man_digest


def image_size(tag: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())
