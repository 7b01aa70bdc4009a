#!/usr/bin/env python3
"""Writes k8s/manifests/*.yaml, the plain-YAML deployment (namespace
`messaging`, two nodes), by rendering charts/tern with MANIFEST_VALUES and
dropping what only Helm needs. The chart is the one source of truth:
test_manifests.py fails when the committed files drift from it.

    python3 tests/packaging/render_manifests.py        # rewrite k8s/manifests/
"""

from __future__ import annotations

import pathlib
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from conftest import MANIFESTS, render  # noqa: E402

NAMESPACE = "messaging"
SECRET_PLACEHOLDER = "change-me-before-production-0123456789"

MANIFEST_VALUES = {
    "replicaCount": 2,
    "clusterSecret": {"value": SECRET_PLACEHOLDER},
    "image": {"repository": "tern", "tag": "0.1.0"},
    # Clients log in: the password file comes from Secret tern-auth, which
    # the user creates (k8s/README.md); the ConfigMap keeps the chart's
    # allow_anonymous = false.
    "auth": {"existingSecret": "tern-auth"},
}

HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")

FILES = [
    ("00-namespace.yaml", "The namespace everything below lives in.", ["Namespace"]),
    (
        "10-rbac.yaml",
        "The pods' identity: discovery may get/list/watch EndpointSlices in this namespace, nothing else.",
        ["ServiceAccount", "Role", "RoleBinding"],
    ),
    (
        "20-config.yaml",
        "Broker settings (tern.toml, passed with --config) and the cluster mesh secret.\n"
        "# Replace the secret before production, e.g.:\n"
        "#   kubectl -n messaging create secret generic tern-cluster \\\n"
        "#     --from-literal=secret=\"$(head -c 32 /dev/urandom | base64)\" --dry-run=client -o yaml | kubectl apply -f -",
        ["ConfigMap", "Secret"],
    ),
    (
        "30-services.yaml",
        "tern-headless: stable pod names and peer discovery (not-ready addresses published, mesh port 44053).\n"
        "# tern: the client Service, MQTT on 1883.",
        ["Service"],
    ),
    ("40-statefulset.yaml", "Two broker nodes, tern-0 and tern-1, forming one cluster.", ["StatefulSet"]),
    ("50-pdb.yaml", "At most one node down at a time during voluntary disruptions.", ["PodDisruptionBudget"]),
]


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _strip_labels(node):
    if isinstance(node, dict):
        for key in ("labels",):
            labels = node.get(key)
            if isinstance(labels, dict):
                for label in HELM_ONLY_LABELS:
                    labels.pop(label, None)
        for value in node.values():
            _strip_labels(value)
    elif isinstance(node, list):
        for value in node:
            _strip_labels(value)


def objects() -> list[dict]:
    rendered = render(MANIFEST_VALUES, name="tern", namespace=NAMESPACE)
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "tern"}},
    }
    out = [namespace]
    for obj in rendered:
        _strip_labels(obj)
        if obj["kind"] == "Secret":
            obj.pop("data")
            obj["stringData"] = {"secret": SECRET_PLACEHOLDER}
        out.append(obj)
    return out


def files() -> dict[str, str]:
    objs = objects()
    placed = set()
    out = {}
    for filename, comment, kinds in FILES:
        docs = []
        for kind in kinds:
            for obj in objs:
                if obj["kind"] == kind:
                    docs.append(yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100))
                    placed.add(id(obj))
        header = (
            f"# {comment}\n"
            "# Generated from charts/tern by tests/packaging/render_manifests.py: edit the chart, then regenerate.\n"
        )
        out[filename] = header + "---\n" + "---\n".join(docs)
    left = [o["kind"] for o in objs if id(o) not in placed]
    assert not left, f"objects with no file: {left}"
    return out


def main() -> None:
    MANIFESTS.mkdir(parents=True, exist_ok=True)
    wanted = files()
    for stale in MANIFESTS.glob("*.yaml"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        (MANIFESTS / name).write_text(text)
        print(f"wrote {MANIFESTS / name}")


if __name__ == "__main__":
    main()
