"""k8s/manifests/: plain YAML for `kubectl apply -f k8s/manifests/`, a
two-node cluster in namespace `messaging` (the seed guide's operator
example). Rendered from the chart, validated like it."""

from __future__ import annotations

import pytest

import render_manifests
from conftest import MANIFESTS, by_kind, load_manifests, one
from kube import check_workload, container_port, env_map, validate


@pytest.fixture(scope="module")
def objects():
    return [obj for _, obj in load_manifests()]


def test_manifests_match_the_chart():
    wanted = render_manifests.files()
    present = {p.name for p in MANIFESTS.glob("*.yaml")}
    assert present == set(wanted), "regenerate with: python3 tests/packaging/render_manifests.py"
    for name, text in wanted.items():
        assert (MANIFESTS / name).read_text() == text, (
            f"k8s/manifests/{name} drifted from charts/tern; regenerate with: python3 tests/packaging/render_manifests.py"
        )


def test_manifests_validate_against_kubernetes_schemas(objects):
    assert objects
    for obj in objects:
        validate(obj)
    check_workload(one(objects, "StatefulSet"))


def test_namespace_first_and_everything_in_it():
    loaded = load_manifests()
    first_path, first = loaded[0]
    assert first["kind"] == "Namespace" and first["metadata"]["name"] == "messaging"
    assert sorted(p.name for p, _ in loaded)[0] == first_path.name  # kubectl applies files in name order
    for _, obj in loaded[1:]:
        assert obj["metadata"]["namespace"] == "messaging", obj["metadata"]["name"]


def test_no_helm_leftovers():
    for path in MANIFESTS.glob("*.yaml"):
        text = path.read_text()
        assert "helm.sh/chart" not in text and "managed-by: Helm" not in text, path
        assert "{{" not in text, path


def test_two_node_cluster(objects):
    sts = one(objects, "StatefulSet")
    assert sts["metadata"]["name"] == "tern" and sts["spec"]["replicas"] == 2
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    headless = one(objects, "Service", "tern-headless")
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert 44053 in [p["port"] for p in headless["spec"]["ports"]]
    assert sts["spec"]["serviceName"] == "tern-headless"
    c = sts["spec"]["template"]["spec"]["containers"][0]
    env = env_map(c)
    assert env["TERN_DISCOVERY__SERVICE"]["value"] == "tern-headless"
    assert env["TERN_DISCOVERY__NAMESPACE"]["value"] == "messaging"
    secret_ref = env["TERN_CLUSTER__SECRET"]["valueFrom"]["secretKeyRef"]
    secret = one(objects, "Secret", secret_ref["name"])
    assert secret_ref["key"] in secret["stringData"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container_port(c, c["livenessProbe"]["httpGet"]["port"]) == 8888
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10000


def test_rbac_and_pdb(objects):
    assert one(objects, "Role")["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    assert one(objects, "RoleBinding")["subjects"][0]["name"] == one(objects, "ServiceAccount")["metadata"]["name"]
    assert by_kind(objects, "PodDisruptionBudget")
    client = one(objects, "Service", "tern")
    assert client["spec"]["type"] == "ClusterIP" and client["spec"]["ports"][0]["port"] == 1883
