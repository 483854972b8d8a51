"""Checks the Helm chart without a cluster, with the real Helm engine (helm-python-sdk).

For the default values and every values file under charts/identity-broker/ci/: `helm lint
--strict`, render, validate each manifest against the Kubernetes schemas (kubernetes-validate),
and assert what the chart promises: probes, ports, security context, the ingress's two paths,
secrets only through Secrets, the migration hook, the dashboard's metrics. Values that
values.schema.json (or, across entries, the templates) must refuse are rendered too, and must fail.

For each scenario it writes into --out the rendered manifests and `broker.json` (the rendered
config.toml, the pods' and the migration Job's environment), which tests/api/chart.rs loads with
the broker's own configuration loader.

Usage: chart_check.py --chart DIR --out DIR [--metrics FILE]
  --metrics: the broker's /metrics exposition; every metric and label the dashboard queries must be in it.
Exit status: 0 when every check passed, 1 otherwise (each failure printed as a FAIL line).
"""

import argparse
import base64
import copy
import glob
import json
import os
import re
import sys
import tomllib
import urllib.parse

import helm_python as helm
import kubernetes_validate
import yaml

RELEASE = "identity-broker"
NAMESPACE = "openhands"
PORTS = {"public": 8080, "internal": 8081, "management": 9000}
PROBES = {"startupProbe": "/health/started", "livenessProbe": "/health/live", "readinessProbe": "/health/ready"}
SERVER_LABELS = {
    "app.kubernetes.io/name": "identity-broker",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "server",
}
# An environment variable so named must come from a Secret; a ConfigMap never mentions these.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|DATABASE_URL|ENCRYPTION_KEYS", re.IGNORECASE)
CONFIGMAP_FORBIDDEN = ["_SECRET", "PASSWORD", "DATABASE_URL", "ENCRYPTION_KEYS", "postgres://", "postgresql://"]
DASHBOARD_METRICS = [
    "identity_broker_sign_ins_total",
    "identity_broker_token_reads_total",
    "identity_broker_token_refreshes_total",
    "identity_broker_token_refresh_duration_seconds_bucket",
    "identity_broker_http_request_duration_seconds_bucket",
]

# Where each scenario's secrets come from: variable -> (Secret, key); every secretKeyRef is listed.
EXPECTED_SECRET_REFS = {
    "default": {
        "DATABASE_URL": ("identity-broker", "database-url"),
        "BROKER_ENCRYPTION_KEYS": ("identity-broker", "encryption-keys"),
    },
    "existing-secrets": {
        "DATABASE_URL": ("postgres-credentials", "url"),
        "BROKER_ENCRYPTION_KEYS": ("broker-secrets", "encryption-keys"),
        "AZURE_DEVOPS_CLIENT_SECRET": ("entra-app", "client-secret"),
        "BROKER_CLIENT_ALLHANDS_SECRET": ("openhands-oauth", "keycloak-client-secret"),
        "BROKER_CLIENT_OPENHANDS_RUNTIME_SECRET": ("broker-secrets", "client-openhands-runtime-secret"),
        "BROKER_ADMIN_PASSWORD": ("broker-secrets", "admin-password"),
    },
    "inline-client-secret": {
        "DATABASE_URL": ("identity-broker", "database-url"),
        "BROKER_ENCRYPTION_KEYS": ("identity-broker", "encryption-keys"),
        "AZURE_DEVOPS_CLIENT_SECRET": ("identity-broker-azure-devops", "client-secret"),
        "BROKER_CLIENT_ALLHANDS_SECRET": ("identity-broker", "client-allhands-secret"),
        "BROKER_CLIENT_OPENHANDS_RUNTIME_SECRET": ("identity-broker", "client-openhands-runtime-secret"),
    },
    "smtp": {
        "DATABASE_URL": ("identity-broker", "database-url"),
        "BROKER_ENCRYPTION_KEYS": ("identity-broker", "encryption-keys"),
        "BROKER_SMTP_PASSWORD": ("identity-broker", "smtp-password"),
    },
}

# Values the schema must refuse: (what is wrong, values, the JSON pointer the refusal names).
SCHEMA_REFUSALS = [
    (
        "the organization given as a URL",
        {
            "azureDevOps": {
                "enabled": True,
                "organization": "https://dev.azure.com/contoso",
                "clientId": "0f4c3c1e-8b1a-4c55-9f36-3f1d2a9e7b10",
            }
        },
        "/azureDevOps/organization",
    ),
    ("replicas 0", {"replicas": 0}, "/replicas"),
    (
        "a tenant that is a domain, not a GUID",
        {"azureDevOps": {"tenantId": "contoso.onmicrosoft.com"}},
        "/azureDevOps/tenantId",
    ),
    (
        "Azure DevOps enabled without a client id",
        {"azureDevOps": {"enabled": True, "organization": "contoso"}},
        "/azureDevOps/clientId",
    ),
    ("a client id that is not a GUID", {"azureDevOps": {"clientId": "my-app"}}, "/azureDevOps/clientId"),
    ("an http:// hostname", {"hostname": "http://auth.example.com"}, "/hostname"),
    ("a hostname with a path", {"hostname": "https://example.com/auth"}, "/hostname"),
    (
        "a wildcard redirect URI",
        {"clients": [{"clientId": "allhands", "redirectUris": ["https://*.example.com/cb"]}]},
        "/clients/0/redirectUris/0",
    ),
    (
        "a client without redirect URIs",
        {"clients": [{"clientId": "allhands", "redirectUris": []}]},
        "/clients/0/redirectUris",
    ),
    (
        "a service account allowed an unknown provider",
        {"serviceAccounts": [{"clientId": "svc", "allowedProviders": ["github"]}]},
        "/serviceAccounts/0/allowedProviders/0",
    ),
    ("SMTP enabled without a host", {"smtp": {"enabled": True, "from": "a@example.com"}}, "/smtp/host"),
    ("an unknown SMTP security", {"smtp": {"security": "ssl"}}, "/smtp/security"),
    ("a misspelt key", {"azureDevOps": {"tenantID": "organizations"}}, "/azureDevOps"),
    (
        "a NetworkPolicy peer with no labels at all",
        {"networkPolicy": {"monitoring": {"namespaceLabels": None}}},
        "/networkPolicy/monitoring",
    ),
    (
        "a secret given as a plain environment value",
        {"extraEnv": [{"name": "BROKER_CLIENT_X_SECRET", "value": "s3cret"}]},
        "/extraEnv/0",
    ),
    ("a realm name with a slash", {"realm": {"name": "all/hands"}}, "/realm/name"),
    ("no Secret to read from", {"existingSecret": ""}, "/existingSecret"),
]

# Values the schema cannot judge entry by entry, refused by the templates naming what to fix.
TEMPLATE_REFUSALS = [
    (
        "a service account allowed a provider that is disabled",
        {"serviceAccounts": [{"clientId": "svc", "allowedProviders": ["azure_devops"]}]},
        "serviceAccounts[0].allowedProviders",
    ),
    (
        "two clients read from one variable",
        {
            "clients": [
                {"clientId": "open-hands", "redirectUris": ["https://a.example/cb"]},
                {"clientId": "open.hands", "redirectUris": ["https://b.example/cb"]},
            ]
        },
        "BROKER_CLIENT_OPEN_HANDS_SECRET",
    ),
    (
        "an autoscaler whose minimum is above its maximum",
        {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}},
        "autoscaling.minReplicas (5) is above autoscaling.maxReplicas (3)",
    ),
]


class Failures:
    """Collects failed checks, so that one run reports them all."""

    def __init__(self):
        self.items = []

    def check(self, condition, message):
        if not condition:
            self.items.append(message)
        return condition


class Scenario:
    """One rendering of the chart: its values (defaults merged) and its objects."""

    def __init__(self, failures, name, values, rendered):
        self.failures = failures
        self.name = name
        self.values = values
        self.rendered = rendered
        self.objects = manifests(rendered)

    def check(self, condition, message):
        return self.failures.check(condition, f"{self.name}: {message}")

    def all(self, kind):
        return [obj for _, obj in self.objects if obj["kind"] == kind]

    def exactly_when(self, kind, enabled, what):
        found = self.all(kind)
        self.check(len(found) == (1 if enabled else 0), f"one {kind} exactly when {what}, found {len(found)}")
        return found

    def secret_values(self):
        """Secrets given inline and what the chart put into Secret objects: they belong nowhere else."""
        values = [self.values["azureDevOps"]["clientSecret"]] if self.values["azureDevOps"].get("clientSecret") else []
        for secret in self.all("Secret"):
            values.extend(base64.b64decode(encoded).decode() for encoded in secret.get("data", {}).values())
        return values


def deep_merge(base, override):
    """Values as Helm coalesces them: maps merge, null deletes a default."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def manifests(rendered):
    """{template: text} -> [(template, object)], hooks included, NOTES.txt left out."""
    objects = []
    for template, text in sorted(rendered.items()):
        if not template.endswith("NOTES.txt"):
            objects.extend((template, document) for document in yaml.safe_load_all(text) if document)
    return objects


def labels_match(selector, labels):
    return all(labels.get(key) == value for key, value in selector.items())


def secret_refs(container):
    return {
        env["name"]: (env["valueFrom"]["secretKeyRef"]["name"], env["valueFrom"]["secretKeyRef"]["key"])
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }


def env_entries(container):
    """The container's environment as broker.json gives it to the Rust side."""
    entries = []
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            entries.append({"name": env["name"], "secret": {"name": ref["name"], "key": ref["key"]}})
        elif "value" in env:
            entries.append({"name": env["name"], "value": env["value"]})
    return entries


def validate_kubernetes(scenario, version):
    for template, obj in scenario.objects:
        name = f"{obj['kind']}/{obj['metadata']['name']} ({template})"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            scenario.check(obj["kind"] == "ServiceMonitor", f"no Kubernetes schema for {name} ({obj['apiVersion']})")
            print(
                f"  {scenario.name}: {name}: {obj['apiVersion']} is a CRD, not in the Kubernetes schemas; not validated"
            )
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            scenario.check(False, f"{name} is not valid Kubernetes {version}: {path}: {err.message}")


def check_locked_down(scenario, where, pod_spec, container):
    pod = pod_spec.get("securityContext", {})
    sec = container.get("securityContext", {})
    check = scenario.check
    check(pod.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot")
    check(pod.get("runAsUser") == 10001, f"{where}: pod runAsUser 10001, not {pod.get('runAsUser')}")
    check(pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: pod seccomp RuntimeDefault")
    check(sec.get("runAsNonRoot") is True, f"{where}: container runAsNonRoot")
    check(sec.get("runAsUser") == 10001, f"{where}: container runAsUser 10001")
    check(sec.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
    check(sec.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
    check(sec.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities.drop [ALL]")
    check(sec.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: container seccomp RuntimeDefault")
    check(pod_spec.get("automountServiceAccountToken") is False, f"{where}: no service account token mounted")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        check("memory" in resources.get(kind, {}), f"{where}: resources.{kind}.memory is set")
    check(not container.get("envFrom"), f"{where}: no envFrom (each secret is one secretKeyRef)")
    for env in container.get("env", []):
        if SECRET_NAME.search(env["name"]):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            check(ref is not None and "value" not in env, f"{where}: {env['name']} must come from a secretKeyRef")
        for secret in scenario.secret_values():
            check(secret not in str(env.get("value", "")), f"{where}: {env['name']} carries a secret value")


def check_secrets_stay_secret(scenario):
    values = scenario.values["azureDevOps"]
    inline = bool(values["enabled"] and values.get("clientSecret"))
    for secret in scenario.exactly_when("Secret", inline, "azureDevOps.clientSecret is given inline"):
        data = secret.get("data", {})
        scenario.check(
            secret["metadata"]["name"] == f"{RELEASE}-azure-devops" and set(data) == {"client-secret"},
            f"Secret {secret['metadata']['name']} holds the inline client secret only",
        )
        scenario.check(
            base64.b64decode(data.get("client-secret", "")).decode() == values["clientSecret"],
            "the chart's Secret holds azureDevOps.clientSecret",
        )
    for config_map in scenario.all("ConfigMap"):
        name = config_map["metadata"]["name"]
        for key, text in config_map.get("data", {}).items():
            for word in CONFIGMAP_FORBIDDEN:
                scenario.check(word.lower() not in text.lower(), f"ConfigMap {name} {key} mentions {word}")
            for secret in scenario.secret_values():
                scenario.check(secret not in text, f"ConfigMap {name} {key} carries a secret value")


def check_deployment(scenario):
    """The Deployment; returns its pod spec and container for the Job's comparison."""
    deployments = scenario.all("Deployment")
    if not scenario.check(len(deployments) == 1, f"one Deployment, found {len(deployments)}"):
        return None, None
    values, check = scenario.values, scenario.check
    spec = deployments[0]["spec"]
    pod_spec = spec["template"]["spec"]
    if not check(len(pod_spec["containers"]) == 1, "one container"):
        return None, None
    container = pod_spec["containers"][0]
    if values["autoscaling"]["enabled"]:
        check("replicas" not in spec, "no replicas when the HPA decides")
    else:
        check(spec.get("replicas") == values["replicas"], f"replicas {values['replicas']}, not {spec.get('replicas')}")
    if scenario.name == "default":
        check(spec.get("replicas") == 2, "two replicas by default")
    check(spec["strategy"]["type"] == "RollingUpdate", "a RollingUpdate")
    check(spec["strategy"]["rollingUpdate"].get("maxUnavailable") == 0, "maxUnavailable 0")
    check(spec["selector"]["matchLabels"] == SERVER_LABELS, "the Deployment selects the server labels")
    check(labels_match(SERVER_LABELS, spec["template"]["metadata"]["labels"]), "its pods carry them")
    annotations = spec["template"]["metadata"].get("annotations", {})
    check(re.fullmatch(r"[0-9a-f]{64}", annotations.get("checksum/config", "")), "a checksum/config annotation")
    inline = bool(values["azureDevOps"]["enabled"] and values["azureDevOps"].get("clientSecret"))
    check(("checksum/secret" in annotations) == inline, "checksum/secret exactly when the chart makes a Secret")
    check(container["args"] == ["start", "--config", "/etc/identity-broker/config.toml"], "args: start --config")

    ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    check(ports == PORTS, f"container ports {ports}, expected {PORTS}")
    for probe, path in PROBES.items():
        get = container.get(probe, {}).get("httpGet", {})
        port = ports.get(get.get("port"), get.get("port"))
        check(get.get("path") == path, f"{probe} path {get.get('path')}, expected {path}")
        check(port == PORTS["management"], f"{probe} on the management port, not {port}")
    check_locked_down(scenario, "Deployment", pod_spec, container)

    env = {e["name"]: e for e in container.get("env", [])}
    check(env.get("BROKER_HOSTNAME", {}).get("value") == values["hostname"], "BROKER_HOSTNAME is `hostname`")
    refs = secret_refs(container)
    for name in ("DATABASE_URL", "BROKER_ENCRYPTION_KEYS"):
        check(name in refs, f"{name} from a Secret")
    check(
        ("AZURE_DEVOPS_CLIENT_SECRET" in refs) == values["azureDevOps"]["enabled"],
        "the Entra secret exactly when enabled",
    )
    for client in values["clients"] + values["serviceAccounts"]:
        name = f"BROKER_CLIENT_{re.sub(r'[^A-Za-z0-9]', '_', client['clientId']).upper()}_SECRET"
        check((name in refs) == (not client.get("publicClient")), f"{name} exactly for a confidential client")
    check(
        ("BROKER_ADMIN_PASSWORD" in refs) == values["admin"]["enabled"], "the admin password exactly when admin is on"
    )
    if scenario.name in EXPECTED_SECRET_REFS:
        expected = EXPECTED_SECRET_REFS[scenario.name]
        check(refs == expected, f"secrets from {refs}, expected {expected}")

    mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    config = volumes.get(mounts.get("/etc/identity-broker"), {})
    check(config.get("configMap", {}).get("name") == RELEASE, "the ConfigMap at /etc/identity-broker")
    check(all("secret" not in volume for volume in volumes.values()), "no Secret mounted as files")
    return pod_spec, container


def check_config(scenario):
    """config.toml as the chart renders it; returns its text."""
    values, check = scenario.values, scenario.check
    config_map = next((cm for cm in scenario.all("ConfigMap") if cm["metadata"]["name"] == RELEASE), {})
    text = config_map.get("data", {}).get("config.toml", "")
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        check(False, f"config.toml is not TOML: {err}")
        return text
    http = config.get("http", {})
    for listener, key in (("public", "bind"), ("internal", "internal_bind"), ("management", "management_bind")):
        check(http.get(key) == f"0.0.0.0:{PORTS[listener]}", f"http.{key} listens on the {listener} container port")
    migrate = config.get("database", {}).get("migrate")
    job = values["migration"]["enabled"]
    check(migrate is (not job), f"database.migrate = {migrate} with migration.enabled = {job}")
    check(config.get("realm", {}).get("name") == values["realm"]["name"], "realm.name")
    provider = config.get("providers", {}).get("azure_devops", {})
    azure = values["azureDevOps"]
    check(provider.get("enabled") is azure["enabled"], "providers.azure_devops.enabled")
    if azure["enabled"]:
        for key, value in (("tenant_id", "tenantId"), ("organization", "organization"), ("client_id", "clientId")):
            check(provider.get(key) == azure[value], f"providers.azure_devops.{key} is azureDevOps.{value}")
    clients = [client["client_id"] for client in config.get("clients", [])]
    check(clients == [client["clientId"] for client in values["clients"]], f"[[clients]] {clients}")
    check(("smtp" in config) == values["smtp"]["enabled"], "[smtp] exactly when smtp is on")
    return text


def check_services(scenario):
    services = {service["metadata"]["name"]: service for service in scenario.all("Service")}
    expected = {RELEASE: "public", f"{RELEASE}-internal": "internal", f"{RELEASE}-management": "management"}
    scenario.check(set(services) == set(expected), f"one Service per listener, found {sorted(services)}")
    for name, listener in expected.items():
        ports = services.get(name, {}).get("spec", {}).get("ports", [])
        scenario.check(
            [(p["port"], p["targetPort"]) for p in ports]
            == [(scenario.values["service"]["ports"][listener], listener)],
            f"Service {name} forwards to the {listener} port",
        )
        selector = services.get(name, {}).get("spec", {}).get("selector")
        scenario.check(selector == SERVER_LABELS, f"Service {name} selects the serving pods only")
    return services


def check_ingress(scenario):
    values = scenario.values
    host = values["ingress"].get("host") or urllib.parse.urlparse(values["hostname"]).hostname
    for ingress in scenario.exactly_when("Ingress", values["ingress"]["enabled"], "ingress.enabled"):
        rules = ingress["spec"]["rules"]
        scenario.check([rule["host"] for rule in rules] == [host], f"Ingress host {host}")
        paths = [path for rule in rules for path in rule["http"]["paths"]]
        found = sorted(path["path"] for path in paths)
        scenario.check(
            found == ["/realms/", "/resources/"], f"Ingress paths exactly /realms/ and /resources/, not {found}"
        )
        for path in paths:
            where = f"Ingress {path['path']}"
            scenario.check(path["pathType"] == "Prefix", f"{where} is a Prefix")
            backend = path["backend"]["service"]
            scenario.check(
                backend == {"name": RELEASE, "port": {"name": "public"}}, f"{where} goes to the public listener"
            )
            scenario.check(
                not path["path"].startswith(("/admin", "/internal", "/health", "/metrics")), f"{where} exposed"
            )
        tls = ingress["spec"].get("tls")
        if values["ingress"]["tls"]["enabled"]:
            secret = values["ingress"]["tls"]["secretName"] or f"{RELEASE}-tls"
            scenario.check(tls == [{"hosts": [host], "secretName": secret}], f"Ingress TLS {tls}")
        else:
            scenario.check(tls is None, "no Ingress TLS")
        class_name = ingress["spec"].get("ingressClassName")
        scenario.check(class_name == (values["ingress"]["className"] or None), f"ingressClassName {class_name}")


def check_network_policy(scenario):
    settings = scenario.values["networkPolicy"]

    def peer(labels):
        result = {}
        if labels.get("namespaceLabels"):
            result["namespaceSelector"] = {"matchLabels": labels["namespaceLabels"]}
        if labels.get("podLabels"):
            result["podSelector"] = {"matchLabels": labels["podLabels"]}
        return result

    for policy in scenario.exactly_when("NetworkPolicy", settings["enabled"], "networkPolicy.enabled"):
        spec = policy["spec"]
        scenario.check(spec["podSelector"]["matchLabels"] == SERVER_LABELS, "the NetworkPolicy covers the serving pods")
        scenario.check(spec["policyTypes"] == ["Ingress"], "the NetworkPolicy polices ingress")
        allowed = {}
        for rule in spec["ingress"]:
            for port in rule["ports"]:
                allowed.setdefault(port["port"], []).extend(rule["from"])
        scenario.check(set(allowed) == set(PORTS), f"NetworkPolicy rules for {sorted(map(str, allowed))}")
        clients, controller, monitoring = (
            peer(settings["clients"]),
            peer(settings["ingressController"]),
            peer(settings["monitoring"]),
        )
        scenario.check(
            allowed.get("internal") == [clients], f"only the labelled clients reach 8081: {allowed.get('internal')}"
        )
        scenario.check(
            allowed.get("public") == [controller, clients], "the ingress controller and the clients reach 8080"
        )
        scenario.check(allowed.get("management") == [monitoring], "only monitoring reaches 9000")


def check_availability(scenario, services):
    values = scenario.values
    for pdb in scenario.exactly_when("PodDisruptionBudget", values["podDisruptionBudget"]["enabled"], "enabled"):
        scenario.check(pdb["spec"]["selector"]["matchLabels"] == SERVER_LABELS, "the PDB covers the serving pods")
    if scenario.name == "default":
        scenario.check(len(scenario.all("PodDisruptionBudget")) == 1, "a PodDisruptionBudget by default")
    for hpa in scenario.exactly_when(
        "HorizontalPodAutoscaler", values["autoscaling"]["enabled"], "autoscaling.enabled"
    ):
        target = hpa["spec"]["scaleTargetRef"]
        scenario.check((target["kind"], target["name"]) == ("Deployment", RELEASE), "the HPA scales the Deployment")
        scenario.check(hpa["spec"]["minReplicas"] == values["autoscaling"]["minReplicas"], "HPA minReplicas")
    for monitor in scenario.exactly_when(
        "ServiceMonitor", values["serviceMonitor"]["enabled"], "serviceMonitor.enabled"
    ):
        scenario.check(monitor["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor monitoring.coreos.com/v1")
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [name for name, service in services.items() if labels_match(selector, service["metadata"]["labels"])]
        scenario.check(
            selected == [f"{RELEASE}-management"], f"the ServiceMonitor selects the management Service: {selected}"
        )
        endpoints = [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]]
        scenario.check(endpoints == [("management", "/metrics")], "the ServiceMonitor scrapes /metrics on management")
        for key, value in values["serviceMonitor"]["labels"].items():
            scenario.check(monitor["metadata"]["labels"].get(key) == value, f"ServiceMonitor label {key}")


def check_migration_job(scenario, pod_spec, container):
    """The hook Job; returns its environment for the Rust side (None without a Job)."""
    job_env = None
    for job in scenario.exactly_when("Job", scenario.values["migration"]["enabled"], "migration.enabled"):
        hooks = set(job["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
        scenario.check(hooks == {"pre-install", "pre-upgrade"}, f"Job hooks pre-install,pre-upgrade, not {hooks}")
        job_pod = job["spec"]["template"]["spec"]
        job_container = job_pod["containers"][0]
        scenario.check(job_container["args"] == ["migrate"], "the Job runs `identity-broker migrate`")
        scenario.check(job_container["image"] == container["image"], "the Job runs the Deployment's image")
        scenario.check(job_pod["restartPolicy"] == "Never", "Job restartPolicy Never")
        scenario.check(
            job_pod["securityContext"] == pod_spec["securityContext"], "the Job has the pods' security context"
        )
        scenario.check(job_container["securityContext"] == container["securityContext"], "and the container's")
        check_locked_down(scenario, "Job", job_pod, job_container)
        database = secret_refs(job_container).get("DATABASE_URL")
        scenario.check(database == secret_refs(container).get("DATABASE_URL"), "the Job's DATABASE_URL is the pods'")
        labels = job["spec"]["template"]["metadata"]["labels"]
        scenario.check(not labels_match(SERVER_LABELS, labels), "the Job's pod is not a serving pod")
        job_env = env_entries(job_container)
    return job_env


def check_dashboard(scenario, metrics):
    settings = scenario.values["grafanaDashboard"]
    dashboards = [cm for cm in scenario.all("ConfigMap") if cm["metadata"]["name"] == f"{RELEASE}-dashboard"]
    scenario.check(len(dashboards) == (1 if settings["enabled"] else 0), "the dashboard exactly when enabled")
    for dashboard in dashboards:
        for key, value in settings["labels"].items():
            scenario.check(dashboard["metadata"]["labels"].get(key) == value, f"dashboard label {key}={value}")
        namespace = settings["namespace"] or NAMESPACE
        scenario.check(dashboard["metadata"]["namespace"] == namespace, f"the dashboard in namespace {namespace}")
        files = dashboard.get("data", {})
        scenario.check(list(files) == ["identity-broker.json"], "the dashboard file identity-broker.json")
        try:
            board = json.loads(files.get("identity-broker.json", "{}"))
        except json.JSONDecodeError as err:
            scenario.check(False, f"dashboard JSON: {err}")
            continue
        exprs = [t["expr"] for p in board.get("panels", []) if p.get("type") != "row" for t in p.get("targets", [])]
        used = set(re.findall(r"\bidentity_broker_[a-z_]+\b", " ".join(exprs)))
        for metric in DASHBOARD_METRICS:
            scenario.check(metric in used, f"the dashboard queries {metric}")
        scenario.check(
            any("reauth_required" in e and "identity_broker_token_reads_total" in e for e in exprs),
            "a panel counts token reads answered reauth_required",
        )
        scenario.check(
            any("by (le, route)" in e and "http_request_duration_seconds_bucket" in e for e in exprs),
            "HTTP latency is broken down by route",
        )
        if metrics is None:
            continue
        for expr in exprs:
            for metric in re.findall(r"\bidentity_broker_[a-z_]+\b", expr):
                if not scenario.check(
                    metric in metrics, f"the dashboard queries {metric}, which the broker does not export"
                ):
                    continue
                for group in re.findall(r"by \(([^)]*)\)", expr):
                    for label in (name.strip() for name in group.split(",")):
                        scenario.check(label == "le" or label in metrics[metric], f"{metric} has no label {label}")


def check_notes(scenario):
    notes = next((text for name, text in scenario.rendered.items() if name.endswith("NOTES.txt")), "")
    hostname, realm = scenario.values["hostname"].rstrip("/"), scenario.values["realm"]["name"]
    redirect = f"{hostname}/realms/{realm}/broker/azure_devops/endpoint"
    scenario.check(redirect in notes, f"NOTES.txt prints the redirect URI {redirect}")
    azure = scenario.values.get("azureDevOps", {})
    if azure.get("enabled"):
        for setting, value in [("AZURE_DEVOPS_TENANT_ID", azure["tenantId"]), ("AZURE_DEVOPS_CLIENT_ID", azure["clientId"])]:
            line = re.search(rf"^\s*{setting}\s+(\S+)\s*$", notes, re.M)
            scenario.check(
                line is not None and line.group(1) == str(value),
                f"NOTES.txt gives OpenHands {setting} = {value}, the broker's own",
            )
        scenario.check("AZURE_DEVOPS_CLIENT_SECRET" in notes, "NOTES.txt names OpenHands' AZURE_DEVOPS_CLIENT_SECRET")


def check_scenario(scenario, metrics):
    """Every assertion on one rendering; returns broker.json's content (None when there is no pod to run)."""
    check_secrets_stay_secret(scenario)
    pod_spec, container = check_deployment(scenario)
    if container is None:
        return None
    config = check_config(scenario)
    services = check_services(scenario)
    check_ingress(scenario)
    check_network_policy(scenario)
    check_availability(scenario, services)
    job_env = check_migration_job(scenario, pod_spec, container)
    check_dashboard(scenario, metrics)
    check_notes(scenario)
    kinds = sorted({obj["kind"] for _, obj in scenario.objects})
    print(f"  {scenario.name}: {len(scenario.objects)} objects ({', '.join(kinds)})")
    return {"config_toml": config, "env": env_entries(container), "job_env": job_env, "ports": PORTS}


def check_refusals(failures, chart):
    # validate_schema, like render, coalesces the values given with the chart's defaults.
    for what, override, pointer in SCHEMA_REFUSALS:
        try:
            chart.render(override, name=RELEASE, namespace=NAMESPACE)
            failures.check(False, f"refusal: {what}: rendered, but values.schema.json should refuse it")
            continue
        except helm.HelmError as err:
            message = str(err)
        failures.check(
            "schema" in message and pointer in message,
            f"refusal: {what}: not refused by the schema at {pointer}: {message}",
        )
        try:
            chart.validate_schema(override)
            failures.check(False, f"refusal: {what}: values.schema.json accepts it")
        except helm.HelmValuesError:
            pass
        print(f"  refused: {what} ({pointer})")
    for what, override, needle in TEMPLATE_REFUSALS:
        try:
            chart.validate_schema(override)
        except helm.HelmValuesError as err:
            failures.check(False, f"refusal: {what}: the schema should accept it and the templates refuse it: {err}")
        try:
            chart.render(override, name=RELEASE, namespace=NAMESPACE)
            failures.check(False, f"refusal: {what}: rendered, but the templates should refuse it")
        except helm.HelmError as err:
            failures.check(needle in str(err), f"refusal: {what}: the message should name {needle}: {err}")
        print(f"  refused: {what} (template)")


def lint(failures, chart_dir, name, override, kube_version):
    report = helm.lint(chart_dir, override, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")
    messages = report.get("messages", [])
    for message in messages:
        if message.get("severity", 0) >= 2:
            failures.check(False, f"{name}: helm lint --strict: {message.get('path')}: {message['error']}")
    for error in report.get("errors", []):
        failures.check(any(error == m.get("error") for m in messages), f"{name}: helm lint --strict: {error}")


def parse_exposition(path):
    """Metric sample name -> its label names, from a Prometheus text exposition."""
    metrics = {}
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            labels = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"', line[len(name) :])
            metrics.setdefault(name, set()).update(labels)
    return metrics


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chart", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics")
    args = parser.parse_args()

    failures = Failures()
    kube_version = kubernetes_validate.latest_version()
    metrics = parse_exposition(args.metrics) if args.metrics else None
    print(
        f"Helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
        f"kubernetes-validate {kubernetes_validate.__version__}: Kubernetes {kube_version} schemas"
    )
    with helm.Chart.load(args.chart) as chart:
        defaults = chart.values
        overrides = [("default", {})]
        for path in sorted(glob.glob(os.path.join(args.chart, "ci", "*-values.yaml"))):
            with open(path) as f:
                overrides.append((os.path.basename(path).removesuffix("-values.yaml"), yaml.safe_load(f) or {}))
        for name, override in overrides:
            lint(failures, args.chart, name, override, kube_version)
            try:
                rendered = chart.render(override, name=RELEASE, namespace=NAMESPACE)
            except helm.HelmError as err:
                failures.check(False, f"{name}: does not render: {err}")
                continue
            out = os.path.join(args.out, name)
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "manifests.yaml"), "w") as f:
                f.writelines(f"# Source: {template}\n{text}\n---\n" for template, text in sorted(rendered.items()))
            scenario = Scenario(failures, name, deep_merge(defaults, override), rendered)
            validate_kubernetes(scenario, kube_version)
            broker = check_scenario(scenario, metrics)
            if broker is not None:
                with open(os.path.join(out, "broker.json"), "w") as f:
                    json.dump(broker, f, indent=2)
        check_refusals(failures, chart)

    for item in failures.items:
        print(f"FAIL {item}")
    refusals = len(SCHEMA_REFUSALS) + len(TEMPLATE_REFUSALS)
    print(f"chart: {len(overrides)} values files rendered, {refusals} refused; {len(failures.items)} failed checks")
    return 1 if failures.items else 0


if __name__ == "__main__":
    sys.exit(main())
