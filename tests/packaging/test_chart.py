"""The Helm chart: lint, schema, a matrix of renders validated against the
Kubernetes schemas, and the invariants a Tern cluster depends on."""

from __future__ import annotations

import os
import subprocess
import tomllib

import pytest

from conftest import CHART, RELEASE, admin_routes, by_kind, helm, one, render, tern_binary
from kube import check_workload, container_port, env_map, validate

HEADLESS = f"{RELEASE}-headless"

MATRIX = {
    "default": {},
    "loadbalancer-tls": {
        "service": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 3600}},
            "loadBalancerSourceRanges": ["192.0.2.0/24"],
            "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
        },
        "tls": {"enabled": True, "secretName": "tern-tls", "requireClientCert": True},
    },
    "nodeport": {
        "service": {
            "type": "NodePort",
            "mqtt": {"nodePort": 31883},
            "mqtts": {"nodePort": 31884},
            "api": {"enabled": True},
        },
        "tls": {"enabled": True, "secretName": "tern-tls"},
    },
    "five-hard": {
        "replicaCount": 5,
        "podAntiAffinity": "hard",
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
        ],
        "pdb": {"minAvailable": 3},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
    },
    "no-persistence": {
        "persistence": {"enabled": False},
        "podAntiAffinity": "",
        "extraEnv": [{"name": "TERN_MQTT__MAX_PACKET_SIZE", "value": "65536"}],
        "clusterSecret": {"existingSecret": "my-mesh", "key": "token"},
        "auth": {"existingSecret": "tern-auth", "aclKey": "acl"},
        "config": {"auth": {"allow_anonymous": False}},
    },
}


def statefulset(objects):
    return one(objects, "StatefulSet", RELEASE)


def broker_container(objects):
    (container,) = [c for c in statefulset(objects)["spec"]["template"]["spec"]["containers"] if c["name"] == "tern"]
    return container


@pytest.fixture(scope="module", params=sorted(MATRIX))
def case(request):
    return request.param, render(MATRIX[request.param])


# --- lint and schema ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_helm_lint_strict(name):
    report = helm().lint(str(CHART), MATRIX[name], strict=True, namespace="messaging")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


@pytest.mark.parametrize(
    "values, where",
    [
        ({"service": {"type": "ExternalName"}}, "/service/type"),
        ({"podAntiAffinity": "always"}, "/podAntiAffinity"),
        ({"service": {"sessionAffinity": "Cookie"}}, "/service/sessionAffinity"),
        ({"replicaCount": "3"}, "/replicaCount"),
        ({"persistence": {"enabled": "yes"}}, "/persistence/enabled"),
        ({"tls": {"enabled": True}}, "/tls"),
        ({"service": {"mqtt": {"nodePort": "x"}}}, "/service/mqtt/nodePort"),
        ({"pdb": {"maxUnavailable": "half"}}, "/pdb/maxUnavailable"),
        ({"serviceMonitor": {"enabled": 1}}, "/serviceMonitor/enabled"),
        ({"extraEnv": [{"value": "x"}]}, "/extraEnv/0"),
        ({"replicas": 3}, "replicas"),
    ],
)
def test_schema_rejects(values, where):
    h = helm()
    with h.Chart.load(str(CHART)) as chart:
        with pytest.raises(h.HelmValuesError) as err:
            chart.render(values=values, name=RELEASE, namespace="messaging")
    assert where in str(err.value)


def test_every_value_is_documented():
    """Each leaf of values.yaml appears in the chart README's table."""
    h = helm()
    with h.Chart.load(str(CHART)) as chart:
        values = chart.values
    readme = (CHART / "README.md").read_text()

    def leaves(prefix, node):
        if isinstance(node, dict) and node and prefix not in {
            "config", "podSecurityContext", "securityContext", "resources"
        }:
            for k, v in node.items():
                yield from leaves(f"{prefix}.{k}" if prefix else k, v)
        else:
            yield prefix

    missing = [key for key in leaves("", values) if f"`{key}`" not in readme]
    assert not missing, f"not in charts/tern/README.md: {missing}"


# --- every render is valid Kubernetes -----------------------------------------


def test_objects_validate_against_kubernetes_schemas(case):
    name, objects = case
    assert objects
    for obj in objects:
        validate(obj)
    check_workload(statefulset(objects))


def test_object_names_unique(case):
    _, objects = case
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), keys


# --- invariants ------------------------------------------------------------------


def test_headless_service_publishes_not_ready_mesh(case):
    _, objects = case
    svc = one(objects, "Service", HEADLESS)
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    mesh = [p for p in svc["spec"]["ports"] if p["port"] == 44053]
    assert mesh and mesh[0]["name"] == "mesh"
    assert statefulset(objects)["spec"]["serviceName"] == HEADLESS
    assert container_port(broker_container(objects), mesh[0]["targetPort"]) == 44053


def test_role_is_exactly_endpointslices_read(case):
    _, objects = case
    role = one(objects, "Role")
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    sa = one(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "messaging"}]
    assert statefulset(objects)["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_probes_on_admin_port(case):
    _, objects = case
    c = broker_container(objects)
    live, ready = c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]
    assert live["path"] == "/health" and container_port(c, live["port"]) == 8888
    assert ready["path"] == "/ready" and container_port(c, ready["port"]) == 8888


def test_health_route_exists_in_admin_rs():
    assert "/health" in admin_routes(), "broker/src/admin/ no longer routes /health (liveness probe)"


def test_ready_route_exists_in_admin_rs():
    if "/ready" not in admin_routes():
        pytest.skip("SKIPPED: /ready is not routed in broker/src/admin/ yet (readiness probe waits for it)")
    assert "/ready" in admin_routes()


def test_runs_as_uid_10000_non_root(case):
    _, objects = case
    pod = statefulset(objects)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10000
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10000
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]


def test_statefulset_shape(case):
    name, objects = case
    sts = statefulset(objects)
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["replicas"] == MATRIX[name].get("replicaCount", 3)
    pod = sts["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    c = broker_container(objects)
    assert c["args"] == ["--config", "/etc/tern/tern.toml"]
    env = env_map(c)
    for var, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"), ("POD_IP", "status.podIP")):
        assert env[var]["valueFrom"]["fieldRef"]["fieldPath"] == path
    assert env["TERN_NODE__NAME"]["value"] == "$(POD_NAME)"
    assert env["TERN_CLUSTER__ENABLED"]["value"] == "true"
    assert env["TERN_DISCOVERY__MODE"]["value"] == "kubernetes"
    assert env["TERN_DISCOVERY__SERVICE"]["value"] == HEADLESS
    ref = env["TERN_CLUSTER__SECRET"]["valueFrom"]["secretKeyRef"]
    existing = MATRIX[name].get("clusterSecret", {}).get("existingSecret")
    if existing:
        assert ref == {"name": existing, "key": MATRIX[name]["clusterSecret"]["key"]}
        assert not by_kind(objects, "Secret")
    else:
        secret = one(objects, "Secret", ref["name"])
        assert ref["key"] in secret["data"]
    # The drain must finish before SIGKILL.
    cm = one(objects, "ConfigMap")
    config = tomllib.loads(cm["data"]["tern.toml"])
    assert config["shutdown"]["grace_period_secs"] < pod["terminationGracePeriodSeconds"]


def test_config_mounted_from_configmap(case):
    _, objects = case
    sts = statefulset(objects)
    cm = one(objects, "ConfigMap")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    mounts = {m["name"]: m for m in broker_container(objects)["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/tern/tern.toml" and mounts["config"]["subPath"] == "tern.toml"
    assert mounts["data"]["mountPath"] == "/var/lib/tern"
    assert "checksum/config" in sts["spec"]["template"]["metadata"]["annotations"]


def test_pdb_exists_by_default(default_objects):
    pdb = one(default_objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == statefulset(default_objects)["spec"]["selector"]


def test_pdb_min_available_and_off():
    assert one(render({"pdb": {"minAvailable": 3}}), "PodDisruptionBudget")["spec"] == {
        "minAvailable": 3,
        "selector": statefulset(render())["spec"]["selector"],
    }
    assert not by_kind(render({"pdb": {"enabled": False}}), "PodDisruptionBudget")


def checksum(values):
    return statefulset(render(values))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_config_checksum_follows_config():
    base = checksum({})
    assert checksum({}) == base
    assert checksum({"replicaCount": 5}) == base
    assert checksum({"config": {"mqtt": {"max_packet_size": 65536}}}) != base
    assert checksum({"config": {"shutdown": {"grace_period_secs": 30}}}) != base


def test_anti_affinity_presets():
    hard = statefulset(render({"podAntiAffinity": "hard"}))["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert list(hard) == ["requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = hard["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == statefulset(render())["spec"]["selector"]["matchLabels"]
    soft = statefulset(render())["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert list(soft) == ["preferredDuringSchedulingIgnoredDuringExecution"]
    assert "affinity" not in statefulset(render({"podAntiAffinity": ""}))["spec"]["template"]["spec"]


def test_topology_spread_gets_pod_selector():
    objects = render(MATRIX["five-hard"])
    (tsc,) = statefulset(objects)["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert tsc["labelSelector"]["matchLabels"] == statefulset(objects)["spec"]["selector"]["matchLabels"]
    assert tsc["topologyKey"] == "topology.kubernetes.io/zone"


def test_client_service_by_type():
    lb = one(render(MATRIX["loadbalancer-tls"]), "Service", RELEASE)["spec"]
    assert lb["type"] == "LoadBalancer" and lb["externalTrafficPolicy"] == "Local"
    assert lb["sessionAffinity"] == "ClientIP"
    assert {p["name"]: p["port"] for p in lb["ports"]} == {"mqtt": 1883, "mqtts": 8883}
    np = one(render(MATRIX["nodeport"]), "Service", RELEASE)["spec"]
    assert {p["name"]: p["nodePort"] for p in np["ports"]} == {"mqtt": 31883, "mqtts": 31884}
    cip = one(render(), "Service", RELEASE)["spec"]
    assert cip["type"] == "ClusterIP" and "externalTrafficPolicy" not in cip
    assert [p["port"] for p in cip["ports"]] == [1883]
    assert all("nodePort" not in p for p in cip["ports"])


def test_api_service_optional():
    assert not [s for s in by_kind(render(), "Service") if s["metadata"]["name"].endswith("-api")]
    api = one(render({"service": {"api": {"enabled": True}}}), "Service", f"{RELEASE}-api")
    assert api["spec"]["ports"] == [{"name": "api", "port": 8888, "targetPort": "api", "protocol": "TCP"}]


def test_tls_mounted_for_8883():
    objects = render(MATRIX["loadbalancer-tls"])
    c = broker_container(objects)
    env = env_map(c)
    mount = {m["name"]: m for m in c["volumeMounts"]}["tls"]
    volume = {v["name"]: v for v in statefulset(objects)["spec"]["template"]["spec"]["volumes"]}["tls"]
    assert volume["secret"]["secretName"] == "tern-tls"
    assert env["TERN_LISTENERS__TLS__ENABLED"]["value"] == "true"
    for key, file in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")):
        assert env[f"TERN_LISTENERS__TLS__{key}"]["value"] == f"{mount['mountPath']}/{file}"
    assert container_port(c, "mqtts") == 8883
    assert "TERN_LISTENERS__TLS__ENABLED" not in env_map(broker_container(render()))


def test_auth_files_from_secret():
    objects = render(MATRIX["no-persistence"])
    c = broker_container(objects)
    env = env_map(c)
    mount = {m["name"]: m for m in c["volumeMounts"]}["auth"]
    assert "subPath" not in mount  # Secret updates must reach the files
    volume = {v["name"]: v for v in statefulset(objects)["spec"]["template"]["spec"]["volumes"]}["auth"]
    assert volume["secret"]["secretName"] == "tern-auth"
    assert env["TERN_AUTH__PASSWORD_FILE"]["value"] == f"{mount['mountPath']}/passwd"
    assert env["TERN_AUTH__ACL_FILE"]["value"] == f"{mount['mountPath']}/acl"
    assert "TERN_AUTH__PASSWORD_FILE" not in env_map(broker_container(render()))


def test_persistence():
    sts = statefulset(render())
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert "storageClassName" not in claim["spec"]
    fast = statefulset(render({"persistence": {"storageClass": "fast", "size": "20Gi"}}))
    assert fast["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
    off = statefulset(render(MATRIX["no-persistence"]))
    assert "volumeClaimTemplates" not in off["spec"]
    assert {"name": "data", "emptyDir": {}} in off["spec"]["template"]["spec"]["volumes"]


def test_service_monitor_scrapes_metrics():
    objects = render(MATRIX["five-hard"])
    sm = one(objects, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"][0]["port"] == "api" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    svc = one(objects, "Service", HEADLESS)
    assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert "api" in {p["name"] for p in svc["spec"]["ports"]}
    assert "/metrics" in admin_routes()
    assert "authorization" not in sm["spec"]["endpoints"][0]
    assert not by_kind(render(), "ServiceMonitor")


def test_service_monitor_sends_the_metrics_key_when_named():
    values = {"serviceMonitor": {"enabled": True, "bearerTokenSecret": {"name": "tern-metrics"}}}
    ep = one(render(values), "ServiceMonitor")["spec"]["endpoints"][0]
    assert ep["authorization"] == {"type": "Bearer", "credentials": {"name": "tern-metrics", "key": "token"}}


def test_config_renders_as_typed_toml():
    values = {"config": {"mqtt": {"max_packet_size": 4294967295, "max_inflight": 20, "shared_subscription_policy": "prefer_local"}}}
    config = tomllib.loads(one(render(values), "ConfigMap")["data"]["tern.toml"])
    assert config["mqtt"] == {"max_packet_size": 4294967295, "max_inflight": 20, "shared_subscription_policy": "prefer_local"}
    assert config["auth"] == {"allow_anonymous": False}, "the chart requires credentials unless the user opts in"
    assert type(config["shutdown"]["grace_period_secs"]) is int


def test_binary_accepts_rendered_config(tmp_path):
    """The ConfigMap's TOML passes `tern --check-config` (a binary built by cargo)."""
    binary = tern_binary()
    if binary is None:
        pytest.skip("SKIPPED: no tern binary under $CARGO_TARGET_DIR or target/ (run cargo build first)")
    values = {"config": {"mqtt": {"max_packet_size": 65536, "queue_drop_policy": "drop_oldest"}}}
    path = tmp_path / "tern.toml"
    path.write_text(one(render(values), "ConfigMap")["data"]["tern.toml"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    # The chart's own settings whose sections this binary knows.
    known = subprocess.run([binary, "--print-default-config"], capture_output=True, text=True, check=True).stdout
    for name, e in env_map(broker_container(render())).items():
        section = name.split("__")[0].removeprefix("TERN_").lower()
        if name.startswith("TERN_") and f"[{section}" in known:
            if "value" in e:
                env[name] = e["value"].replace("$(POD_NAME)", "tern-0")
            elif "secretKeyRef" in e.get("valueFrom", {}):
                env[name] = "a-mesh-secret-for-the-test"
    result = subprocess.run([binary, "--config", path, "--check-config"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stdout


def test_binary_knows_cluster_keys():
    """Once the cluster and discovery sections land, every key the chart sets exists."""
    binary = tern_binary()
    if binary is None:
        pytest.skip("SKIPPED: no tern binary under $CARGO_TARGET_DIR or target/")
    known = subprocess.run([binary, "--print-default-config"], capture_output=True, text=True, check=True).stdout
    if "[cluster]" not in known or "[discovery]" not in known:
        pytest.skip("SKIPPED: this tern has no [cluster]/[discovery] config sections yet")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    for name, e in env_map(broker_container(render())).items():
        if name.startswith("TERN_"):
            env[name] = e.get("value", "s3cret-for-the-test").replace("$(POD_NAME)", "tern-0")
    env["POD_NAMESPACE"] = "messaging"
    result = subprocess.run([binary, "--check-config"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
