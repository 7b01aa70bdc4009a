"""Checks on Kubernetes objects that go beyond their OpenAPI schema: the
cross-references the API server or kubelet would reject at run time."""

from __future__ import annotations

import kubernetes_validate

from conftest import KUBE_VERSION

# Custom resources kubernetes-validate has no schema for, checked by hand.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def validate(obj: dict) -> None:
    """Strict schema validation (unknown fields are errors)."""
    if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
        spec = obj["spec"]
        assert spec["selector"]["matchLabels"], "ServiceMonitor without a selector"
        assert spec["endpoints"] and all("port" in e for e in spec["endpoints"])
        return
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {e.message}") from None


def container_port(container: dict, port) -> int:
    """A probe's port (number or name) as a number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port}")


def check_workload(sts: dict) -> None:
    """Names referenced inside the StatefulSet exist, and nothing is doubled."""
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"] for v in pod.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
    assert not volumes & claims, f"volume and claim template share a name: {volumes & claims}"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for key, value in sts["spec"]["selector"]["matchLabels"].items():
        assert labels.get(key) == value, f"selector {key}={value} does not match the pod labels"
    for c in pod["containers"]:
        mounts = [m["name"] for m in c.get("volumeMounts", [])]
        for m in mounts:
            assert m in volumes | claims, f"mount {m} has no volume"
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        assert len(paths) == len(set(paths)), f"duplicate mount paths {paths}"
        env = [e["name"] for e in c.get("env", [])]
        assert len(env) == len(set(env)), f"duplicate env {env}"
        ports = c.get("ports", [])
        assert len({p["containerPort"] for p in ports}) == len(ports)
        assert len({p["name"] for p in ports}) == len(ports)
        # $(VAR) only expands variables defined earlier in the list.
        seen = set()
        for e in c.get("env", []):
            for ref in _refs(e.get("value", "")):
                assert ref in seen, f"{e['name']} uses $({ref}) before it is defined"
            seen.add(e["name"])


def _refs(value: str) -> list[str]:
    import re

    return re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value or "")


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}
