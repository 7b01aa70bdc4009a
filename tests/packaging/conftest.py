"""Shared helpers for the packaging tests: render the Helm chart with the
helm-python-sdk (Helm's Go SDK behind a C ABI, no helm binary), and
validate objects against Kubernetes' OpenAPI schemas with
kubernetes-validate."""

from __future__ import annotations

import os
import pathlib
import re
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tern"
MANIFESTS = REPO / "k8s" / "manifests"
ADMIN_DIR = REPO / "broker" / "src" / "admin"

# A recent Kubernetes release that kubernetes-validate ships schemas for.
KUBE_VERSION = "1.35.0"
RELEASE = "tern"
NAMESPACE = "messaging"

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def helm():
    import helm_python

    return helm_python


def render(values: dict | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> list[dict]:
    """`helm template` of the chart: every object, in template order."""
    h = helm()
    with h.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values=values or {}, name=name, namespace=namespace, is_install=True)
    objects = []
    for path in sorted(rendered):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if doc:
                objects.append(doc)
    return objects


def load_manifests() -> list[tuple[pathlib.Path, dict]]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def admin_routes() -> set[str]:
    """The HTTP paths the admin router serves, read from the Rust source
    (every file of the `admin` module: the router merges their routes)."""
    source = "".join(p.read_text() for p in sorted(ADMIN_DIR.rglob("*.rs")))
    return set(re.findall(r'\.route\(\s*"([^"]+)"', source))


def tern_binary() -> pathlib.Path | None:
    """A `tern` built by cargo (CI runs `cargo test` first), if any."""
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("debug", "release"):
        candidate = target / profile / "tern"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def default_objects() -> list[dict]:
    return render()
