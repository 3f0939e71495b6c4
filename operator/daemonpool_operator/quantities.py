"""Kubernetes quantities: numbers written in YAML as the strings the API wants, and strings read back as
numbers, so a template compares equal to what the API server stored ("0.5" is stored as "500m")."""

from __future__ import annotations


def quantity_string(v):
    """A quantity written as a YAML number (cpu: 1, memory: 1073741824) as the string Kubernetes expects."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return f"{v:.9f}".rstrip("0").rstrip(".")


def canonical_quantities(pod_spec: dict) -> None:
    """Numbers to strings where Kubernetes wants quantities, in place; compared by value later (differences)."""
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for c in pod_spec.get(key) or []:
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                if isinstance(res.get(part), dict):
                    res[part] = {k: quantity_string(v) for k, v in res[part].items()}
    if isinstance(pod_spec.get("overhead"), dict):
        pod_spec["overhead"] = {k: quantity_string(v) for k, v in pod_spec["overhead"].items()}
    for v in pod_spec.get("volumes") or []:
        if isinstance(v.get("emptyDir"), dict) and "sizeLimit" in v["emptyDir"]:
            v["emptyDir"]["sizeLimit"] = quantity_string(v["emptyDir"]["sizeLimit"])


QUANTITY_SUFFIX = {
    "": 1,
    "m": 0.001,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity(v):
    """A Kubernetes quantity as a number, or None: the API server normalizes "0.5" to "500m"."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return None
    s = str(v)
    for suffix in sorted(QUANTITY_SUFFIX, key=len, reverse=True):
        if suffix and s.endswith(suffix):
            num, mult = s[: -len(suffix)], QUANTITY_SUFFIX[suffix]
            break
    else:
        num, mult = s, 1
    try:
        return round(float(num) * mult, 9)
    except ValueError:
        return None
