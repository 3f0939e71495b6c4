"""hack/local-cluster up|down|status|env|load-image ARCHIVE|build-image DOCKERFILE TAG|install|tools|registry|addons NAME...|kind ..."""

import argparse
import sys

from . import addons, cluster, config, fakenodes, images, install, kind, registry, tools


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="hack/local-cluster", description="A real single-node Kubernetes from upstream binaries."
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start the cluster (installs and builds what is missing)")
    sub.add_parser("down", help="stop everything and put the host back; idempotent")
    sub.add_parser("status", help="what runs (exit 0 when the cluster is up)")
    sub.add_parser("env", help="print export lines for KUBECONFIG and PATH")
    sub.add_parser("install", help="only install packages, build binaries and helm")
    li = sub.add_parser("load-image", help="import an image archive (docker save or OCI layout) into the cluster")
    li.add_argument("archive")
    bi = sub.add_parser("build-image", help="docker build a project Dockerfile on the local base and load it")
    bi.add_argument("dockerfile")
    bi.add_argument("tag")
    sub.add_parser("images", help="print the project's images, one 'DOCKERFILE TAG' per line")
    fn = sub.add_parser("fake-nodes", help="add N fake nodes (kwok) next to the real one")
    fn.add_argument("n", type=int)
    tl = sub.add_parser("tools", help="build (once) the Go tools: helm, registry, promtool, kubeconform, kube-score")
    tl.add_argument("names", nargs="*", help="which (default: all)")
    rg = sub.add_parser("registry", help="a local OCI registry on 127.0.0.1 the cluster pulls from: up, down, status")
    rg.add_argument("action", choices=["up", "down", "status"])
    rg.add_argument("--wipe", action="store_true", help="with down: also delete what was pushed")
    ad = sub.add_parser("addons", help="build (once) and install optional components: metrics-server, keda")
    ad.add_argument("names", nargs="+", choices=sorted(addons.ADDONS))
    ad.add_argument("--build-only", action="store_true", help="only build the binaries (no cluster needed)")
    kd = sub.add_parser(
        "kind", help="a kind cluster on a node image built here: node-image, up, down, env, build-image"
    )
    kd.add_argument("action", choices=["node-image", "up", "down", "env", "build-image"])
    kd.add_argument(
        "args", nargs="*", help="up/down: the cluster's name (default daemonpool); build-image: DOCKERFILE TAG"
    )
    a = p.parse_args(argv)
    try:
        if a.cmd == "up":
            cluster.up()
        elif a.cmd == "down":
            cluster.down()
        elif a.cmd == "status":
            return cluster.status()
        elif a.cmd == "env":
            print(f"export KUBECONFIG={config.KUBECONFIG}")
            print(f"export PATH={config.BIN}:{config.TOOLS / 'bin'}:$PATH")
        elif a.cmd == "install":
            install.ensure_all()
        elif a.cmd == "load-image":
            print(images.load_image(a.archive))
        elif a.cmd == "addons":
            if a.build_only:
                addons.build_only(a.names)
            else:
                if not cluster.is_up():
                    raise SystemExit("addons: the local cluster is not up (hack/local-cluster up)")
                addons.install(a.names)
        elif a.cmd == "registry":
            if a.action == "up":
                print(registry.up())
            elif a.action == "down":
                registry.down(wipe=a.wipe)
            else:
                return registry.status()
        elif a.cmd == "tools":
            tools.main(a.names)
        elif a.cmd == "fake-nodes":
            fakenodes.add(a.n)
        elif a.cmd == "images":
            for dockerfile, tag in config.PROJECT_IMAGES.values():
                print(dockerfile, tag)
        elif a.cmd == "kind":
            kind.main([a.action, *a.args])
        elif a.cmd == "build-image":
            images.build_image(a.dockerfile, a.tag)
    except cluster.ClusterError as exc:
        print(f"[local-cluster] {a.cmd} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
