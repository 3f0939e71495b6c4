"""What the cluster changes on the host, and how it is put back: the bridge, the nftables guard, sysctls,
mounts, network namespaces, cgroups and log links, compared with a baseline taken before `up`."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time

from . import config as C
from .procs import say, sh


def sysctl_read(key):
    try:
        return (pathlib.Path("/proc/sys") / key.replace(".", "/")).read_text().strip()
    except FileNotFoundError:
        return None


def sysctl_write(key, value):
    try:
        (pathlib.Path("/proc/sys") / key.replace(".", "/")).write_text(value)
    except (FileNotFoundError, PermissionError, OSError):
        pass


def nft_tables() -> list:
    out = sh("nft", "list", "tables", check=False).stdout
    return [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("table ")]


def take_baseline() -> dict:
    path = C.RUN / "baseline.json"
    if path.exists():
        return json.loads(path.read_text())
    base = {
        "sysctls": {k: sysctl_read(k) for k in C.SYSCTLS},
        "nft_tables": nft_tables(),
        "links": sorted(os.listdir("/sys/class/net")),
        "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(base, indent=1))
    return base


def load_baseline() -> dict | None:
    path = C.RUN / "baseline.json"
    return json.loads(path.read_text()) if path.exists() else None


def net_up():
    """The bridge with the gateway address, and the guard, before any pod starts."""
    if not os.path.exists(f"/sys/class/net/{C.BRIDGE}"):
        sh("ip", "link", "add", C.BRIDGE, "type", "bridge")
    addrs = sh("ip", "-o", "-4", "addr", "show", "dev", C.BRIDGE).stdout
    if f"{C.GATEWAY}/" not in addrs:
        sh("ip", "addr", "add", f"{C.GATEWAY}/{C.POD_CIDR.split('/')[1]}", "dev", C.BRIDGE)
    sh("ip", "link", "set", C.BRIDGE, "up")
    # The guard: nothing forwarded from the bridge may leave through another interface.
    guard = f"""table inet {C.GUARD_TABLE} {{
  chain forward {{
    type filter hook forward priority -200; policy accept;
    iifname "{C.BRIDGE}" oifname != "{C.BRIDGE}" counter reject with icmpx admin-prohibited
  }}
}}
"""
    sh("nft", "delete", "table", "inet", C.GUARD_TABLE, check=False)
    sh("nft", "-f", "-", input=guard)


def guard_installed() -> bool:
    return f"inet {C.GUARD_TABLE}" in nft_tables()


def node_ip() -> str:
    out = sh("ip", "-o", "-4", "route", "get", "192.0.2.255", check=False).stdout.split()
    if "src" in out:
        return out[out.index("src") + 1]
    out = sh("hostname", "-I", check=False).stdout.split()
    return out[0]


def unmount_under(*roots):
    mounts = []
    for line in pathlib.Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if any(target == str(r) or target.startswith(str(r) + "/") for r in roots):
            mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        sh("umount", "-l", target, check=False)


def restore(base: dict | None) -> None:
    """Network namespaces, the bridge, veths, nft tables, sysctls, cgroups and log links back to ``base``."""
    if os.path.isdir("/run/netns"):
        keep = set(base["netns"]) if base else set()
        for ns in os.listdir("/run/netns"):
            if ns.startswith("cni-") and ns not in keep:
                sh("ip", "netns", "delete", ns, check=False)
    if base:
        # kind's cluster may be up beside this one: its bridge, guard and sysctls stay.
        left = put_back_network(base, (C.BRIDGE, C.GUARD_TABLE), (C.KIND_BRIDGE, C.KIND_GUARD_TABLE))
        if left:
            say(f"the host still differs from its baseline: {left}")
    else:
        if os.path.exists(f"/sys/class/net/{C.BRIDGE}"):
            sh("ip", "link", "delete", C.BRIDGE, check=False)
        sh("nft", "delete", "table", "inet", C.GUARD_TABLE, check=False)
    remove_kubepods_cgroups()
    # The kubelet links each container's log here; ours point into our pod-logs folder.
    if os.path.isdir("/var/log/containers"):
        for entry in os.listdir("/var/log/containers"):
            link = os.path.join("/var/log/containers", entry)
            if os.path.islink(link) and os.readlink(link).startswith(str(C.RUN / "pod-logs")):
                os.unlink(link)


def master_of(link: str) -> str | None:
    """The bridge ``link`` hangs on, or None."""
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{link}/master"))
    except OSError:
        return None


def put_back_network(base: dict, own: tuple[str, str], other: tuple[str, str]) -> list[str]:
    """The host's network after one of the harness's two clusters (the local one, kind's), back to ``base``:
    ``own`` (bridge, guard table) gone, and the veths, nft tables and sysctls changed since ``base`` put back;
    but never what the ``other`` cluster holds while it is up (its guard is there): its bridge and guard, the
    veths on its bridge, the tables made since (they may be its own), the forwarding sysctls it needs.
    Returns what still differs, the other's aside. (Before, the local cluster's teardown deleted kind's guard
    while kind was up, and kind's deleted the local pods' veths.)"""
    (bridge, guard), (other_bridge, other_guard) = own, other
    other_up = f"inet {other_guard}" in nft_tables()
    new_veths = {
        link: master_of(link)
        for link in os.listdir("/sys/class/net")
        if link.startswith("veth") and link not in base["links"]
    }
    if os.path.exists(f"/sys/class/net/{bridge}"):
        sh("ip", "link", "delete", bridge, check=False)
    for link, master in new_veths.items():
        if master in (bridge, None):  # ours, or left on no bridge at all
            sh("ip", "link", "delete", link, check=False)
    # While the other is up, a table made since may be its own (kube-proxy's): only ours goes then.
    for table in nft_tables():
        if table not in base["nft_tables"] and (table == f"inet {guard}" or not other_up):
            sh("nft", "delete", "table", *table.split(), check=False)
    diffs = [
        f"link {link}"
        for link in sorted(os.listdir("/sys/class/net"))
        if link not in base["links"] and link != other_bridge and master_of(link) != other_bridge
    ]
    if other_up:
        return diffs + [f"nft table inet {guard}"] * (f"inet {guard}" in nft_tables())
    for key, value in base["sysctls"].items():
        if value is not None and sysctl_read(key) != value:
            sysctl_write(key, value)
    diffs += [f"nft table {t}" for t in nft_tables() if t not in base["nft_tables"]]
    return diffs + [f"sysctl {k}" for k, v in base["sysctls"].items() if v is not None and sysctl_read(k) != v]


def remove_kubepods_cgroups():
    for top in pathlib.Path("/sys/fs/cgroup").iterdir():
        kp = top / "kubepods"
        if not kp.is_dir():
            continue
        dirs = sorted((p for p in kp.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [kp]
        for p in dirs:
            try:
                for pid in (p / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            except OSError:
                pass
        for _ in range(20):
            left = False
            for p in dirs:
                try:
                    p.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left = True
            if not left:
                break
            time.sleep(0.1)
