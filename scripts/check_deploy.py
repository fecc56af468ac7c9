"""The checks of scripts/check-deploy.sh that no stock tool makes. Run by that script with
.venv/deploy's Python (PyYAML, kubernetes-validate); every failure names the file.

  check_deploy.py systemd-deps ROOT UNIT...  every unit a [Unit]/[Install] dependency names
                                             exists (systemd-analyze verify accepts a typo there)
  check_deploy.py kubernetes DIR             kustomization.yaml's files, strict schema validation
                                             of every manifest against Kubernetes 1.30 (the oldest
                                             deploy/README.md supports) and the newest bundled,
                                             and what the manifests rely on across files
  check_deploy.py grafana FILE RULES_OUT     dashboard sanity; writes each panel query as a
                                             recording rule to RULES_OUT for `promtool check rules`
  check_deploy.py alerts RULES TESTS README  every alert has severity, summary, description, a
                                             runbook anchor that exists, and a firing and a quiet
                                             `promtool test rules` case; README's #links resolve
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml


class Failures:
    def __init__(self):
        self.items = []

    def __call__(self, where, message):
        self.items.append(f"{where}: {message}")

    def exit(self, what):
        if self.items:
            for item in self.items:
                print(f"FAIL {item}", file=sys.stderr)
            print(f"{what}: {len(self.items)} problem(s)", file=sys.stderr)
            sys.exit(1)


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; kubectl and Prometheus reject or misread them."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(path, fail, many=False):
    try:
        text = Path(path).read_text()
        if many:
            return [doc for doc in yaml.load_all(text, Loader=UniqueKeyLoader) if doc is not None]
        return yaml.load(text, Loader=UniqueKeyLoader)
    except (OSError, yaml.YAMLError) as e:
        fail(path, f"cannot parse: {e}")
        return [] if many else None


# --- systemd ---------------------------------------------------------------------------------

DEPENDENCY_KEYS = {
    "Unit": {"Wants", "Requires", "Requisite", "BindsTo", "PartOf", "Upholds", "Conflicts",
             "Before", "After", "OnFailure", "OnSuccess"},
    "Install": {"WantedBy", "RequiredBy", "UpheldBy", "Also"},
}


def systemd_deps(root, units):
    fail = Failures()
    dirs = [Path(root, d) for d in ("etc/systemd/system", "usr/lib/systemd/system")]
    for unit in units:
        section = None
        for number, line in enumerate(Path(unit).read_text().splitlines(), 1):
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            if key.strip() not in DEPENDENCY_KEYS.get(section, ()):
                continue
            for name in value.split():
                if not any((d / name).exists() for d in dirs):
                    fail(f"{unit}:{number}", f"{key.strip()}= names {name}, which is no unit "
                         "systemd ships (a typo here is silently ignored by systemd)")
    fail.exit("systemd dependencies")


# --- Kubernetes ------------------------------------------------------------------------------

K8S_VERSIONS = ("1.30", None)  # None: the newest schema kubernetes-validate bundles
SERVER_ROUTES = "gateway/src/lib.rs"   # `citadel serve`'s REST routes
WORKER_ROUTES = "src/ops.rs"           # `citadel worker`'s operations port
PROTO_DIR = "proto/citadel/v1"


def routes(path, fail):
    try:
        text = Path(path).read_text()
    except OSError as e:
        fail(path, f"cannot read the routes the probes are checked against: {e}")
        return set()
    found = set(re.findall(r'\.route(?:_service)?\(\s*"([^"]+)"', text))
    if not found:
        fail(path, "no .route(\"...\") found: update scripts/check_deploy.py to where the "
             "routes are now")
    return found


def grpc_services(fail):
    names = {""}
    for proto in sorted(Path(PROTO_DIR).glob("*.proto")):
        text = proto.read_text()
        package = re.search(r"^package\s+([\w.]+)\s*;", text, re.M)
        for service in re.findall(r"^service\s+(\w+)", text, re.M):
            names.add(f"{package.group(1)}.{service}" if package else service)
    if len(names) == 1:
        fail(PROTO_DIR, "no gRPC service found in the .proto files")
    return names


def validate_schema(where, doc, fail):
    import kubernetes_validate
    from kubernetes_validate import utils

    latest = utils.latest_version()
    for version in K8S_VERSIONS:
        version = version or latest
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except utils.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top level)"
            fail(where, f"Kubernetes {version} schema (strict): {path}: {e.message}")
        except utils.SchemaNotFoundError as e:
            fail(where, e.message)
        except Exception as e:  # noqa: BLE001 - the library's own failures name no file
            fail(where, f"cannot validate against Kubernetes {version}: {e}")


def port_of(container, port):
    """The containerPort a probe or targetPort names (a name or a number), or None."""
    for p in container.get("ports", []):
        if port == p.get("name") or port == p.get("containerPort"):
            return p["containerPort"]
    return None


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_pod(where, deployment, served, services, restricted, configmaps, fail):
    spec = deployment["spec"]
    template = spec["template"]
    labels = template.get("metadata", {}).get("labels", {})
    if not selects(spec.get("selector", {}).get("matchLabels", {}), labels):
        fail(where, "spec.selector.matchLabels does not match the pod template's labels")
    pod = template["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in configmaps:
            fail(where, f"volume {v['name']} mounts ConfigMap {v['configMap']['name']}, "
                 "which no manifest defines")
    containers = pod.get("containers", [])
    everything = pod.get("initContainers", []) + containers
    for c in everything:
        name = f"{where} container {c['name']}"
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                fail(name, f"volumeMount {m['name']} names no volume of the pod")
        if restricted:
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(name, "Pod Security 'restricted' (namespace.yaml) needs "
                     "securityContext.allowPrivilegeEscalation: false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                fail(name, "Pod Security 'restricted' needs capabilities.drop: [ALL]")
            if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
                fail(name, "Pod Security 'restricted' allows adding NET_BIND_SERVICE only")
            if sc.get("privileged"):
                fail(name, "privileged containers are refused under 'restricted'")
    if restricted:
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True and not all(
            c.get("securityContext", {}).get("runAsNonRoot") for c in everything
        ):
            fail(where, "Pod Security 'restricted' needs runAsNonRoot: true")
        if psc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            fail(where, "Pod Security 'restricted' needs seccompProfile RuntimeDefault")
        if pod.get("hostNetwork") or any("hostPath" in v for v in volumes.values()):
            fail(where, "hostNetwork / hostPath are refused under 'restricted'")

    for c in containers:
        name = f"{where} container {c['name']}"
        command = (c.get("args") or c.get("command") or [""])[0]
        paths = served.get(command)
        if paths is None:
            fail(name, f"runs {command!r}: expected `serve` or `worker` as its first argument")
            paths = set()
        ports = c.get("ports", [])
        for p in ports:
            if not p.get("name"):
                fail(name, f"containerPort {p['containerPort']} has no name (probes and "
                     "Services refer to ports by name)")
        for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(probe_kind)
            if not probe:
                continue
            for handler in ("httpGet", "grpc", "tcpSocket"):
                if handler in probe and port_of(c, probe[handler]["port"]) is None:
                    fail(name, f"{probe_kind}.{handler}.port {probe[handler]['port']!r} is no "
                         "containerPort of this container")
            if "httpGet" in probe and probe["httpGet"].get("path") not in paths:
                fail(name, f"{probe_kind} GETs {probe['httpGet'].get('path')!r}, which "
                     f"`citadel {command}` does not route (it routes {sorted(paths)})")
            if "grpc" in probe and probe["grpc"].get("service", "") not in services:
                fail(name, f"{probe_kind}.grpc.service {probe['grpc'].get('service')!r} is no "
                     f"gRPC service in {PROTO_DIR}")
        # A listen address given by variable must be a port the container declares.
        for env in c.get("env", []):
            m = re.fullmatch(r"CITADEL_\w+__\w*ADDR", env["name"])
            if m and "value" in env:
                port = int(env["value"].rsplit(":", 1)[1])
                if port_of(c, port) is None:
                    fail(name, f"{env['name']}={env['value']} listens on {port}, which is no "
                         "containerPort of this container")
                if env["value"].startswith("127.") or env["value"].startswith("[::1]"):
                    fail(name, f"{env['name']}={env['value']} listens on loopback only: the "
                         "kubelet and Prometheus cannot reach it")
        annotations = template.get("metadata", {}).get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            check_scrape(name, annotations, [c], paths, fail)


def check_scrape(where, annotations, containers, paths, fail):
    port = annotations.get("prometheus.io/port")
    if port is None or not any(port_of(c, int(port)) for c in containers):
        fail(where, f"prometheus.io/port {port!r} is no containerPort")
    path = annotations.get("prometheus.io/path", "/metrics")
    if path not in paths:
        fail(where, f"prometheus.io/path {path!r} is not routed")


def kubernetes(directory):
    fail = Failures()
    directory = Path(directory)
    kustomization = directory / "kustomization.yaml"
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
    k = load_yaml(kustomization, fail) or {}
    if k.get("kind") != "Kustomization" or not str(k.get("apiVersion", "")).startswith(
        "kustomize.config.k8s.io/"
    ):
        fail(kustomization, "expected apiVersion kustomize.config.k8s.io/v1beta1, kind "
             "Kustomization")
    listed = k.get("resources", [])
    for resource in listed:
        if not (directory / resource).is_file():
            fail(kustomization, f"resources: {resource} does not exist")
    for p in files:
        if p != kustomization and p.name not in listed:
            fail(kustomization, f"{p.name} is not listed under resources: "
                 "`kubectl apply -k` would skip it")

    docs = []  # (file, doc)
    for p in files:
        if p == kustomization:
            continue
        for doc in load_yaml(p, fail, many=True):
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                fail(p, "a document without apiVersion and kind")
                continue
            where = f"{p} {doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
            validate_schema(where, doc, fail)
            docs.append((p, where, doc))
    if fail.items:  # the cross-file checks below assume schema-valid documents
        fail.exit("kubernetes")

    by_kind = {}
    for _, where, doc in docs:
        by_kind.setdefault(doc["kind"], []).append((where, doc))
    namespaces = by_kind.get("Namespace", [])
    if k.get("namespace") and k["namespace"] not in {d["metadata"]["name"] for _, d in namespaces}:
        fail(kustomization, f"namespace: {k['namespace']} is not defined by any manifest")
    restricted = any(
        d["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted"
        for _, d in namespaces
    )
    configmaps = {d["metadata"]["name"]: (w, d) for w, d in by_kind.get("ConfigMap", [])}
    for name, (where, cm) in configmaps.items():
        for key, text in cm.get("data", {}).items():
            if key.endswith(".toml"):
                try:
                    tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    fail(where, f"data.{key} is not valid TOML: {e}")
    served = {"serve": routes(SERVER_ROUTES, fail), "worker": routes(WORKER_ROUTES, fail)}
    services = grpc_services(fail)
    deployments = by_kind.get("Deployment", [])
    images = set()
    for where, d in deployments:
        check_pod(where, d, served, services, restricted, configmaps, fail)
        pod = d["spec"]["template"]["spec"]
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            images.add(c["image"].split("@")[0].rsplit(":", 1)[0])
    for image in k.get("images", []):
        if image["name"] not in images:
            fail(kustomization, f"images: {image['name']} matches no container image "
                 "(the override would change nothing)")

    for where, svc in by_kind.get("Service", []):
        selector = svc["spec"].get("selector", {})
        pods = [d for _, d in deployments if selects(selector, d["spec"]["template"]["metadata"]
                                                     .get("labels", {}))]
        if not pods:
            fail(where, f"selector {selector} matches no Deployment's pods")
            continue
        containers = [c for d in pods for c in d["spec"]["template"]["spec"]["containers"]]
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            if not any(port_of(c, target) for c in containers):
                fail(where, f"port {p.get('name', p['port'])}: targetPort {target!r} is no "
                     "containerPort of the selected pods")
        annotations = svc["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            commands = {(c.get("args") or [""])[0] for c in containers}
            paths = set.union(*(served.get(cmd, set()) for cmd in commands))
            check_scrape(where, annotations, containers, paths, fail)

    deployment_names = {d["metadata"]["name"]: d for _, d in deployments}
    for where, hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]
        d = deployment_names.get(target["name"])
        if target["kind"] != "Deployment" or d is None:
            fail(where, f"scaleTargetRef {target['kind']}/{target['name']} is not defined")
        elif "replicas" in d["spec"]:
            fail(where, f"Deployment {target['name']} sets spec.replicas: every `kubectl "
                 "apply` would reset the HPA's count")
    for where, pdb in by_kind.get("PodDisruptionBudget", []):
        selector = pdb["spec"].get("selector", {}).get("matchLabels", {})
        if not any(selects(selector, d["spec"]["template"]["metadata"].get("labels", {}))
                   for d in deployment_names.values()):
            fail(where, f"selector {selector} matches no Deployment's pods")
    fail.exit("kubernetes")
    print(f"  {len(docs)} objects in {len(files) - 1} files valid (strict) against Kubernetes "
          f"{', '.join(v or 'newest bundled' for v in K8S_VERSIONS)}; kustomization and "
          "cross-references consistent")


# --- Grafana ---------------------------------------------------------------------------------

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def grafana(path, rules_out):
    fail = Failures()
    try:
        dashboard = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(path, f"cannot parse: {e}")
        fail.exit("grafana")
    inputs = {i.get("name") for i in dashboard.get("__inputs", [])}
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    if "DS_PROMETHEUS" not in inputs | variables:
        fail(path, "DS_PROMETHEUS is neither an __inputs entry nor a variable")
    required = {r["id"] for r in dashboard.get("__requires", []) if r.get("type") == "panel"}
    panels = list(walk_panels(dashboard.get("panels", [])))
    if not panels:
        fail(path, "no panels")
    ids = {}
    rules = []
    cells = {}
    for p in panels:
        pid = p.get("id")
        where = f"{path} panel {pid} ({p.get('title', '?')!r})"
        if not isinstance(pid, int):
            fail(where, "id is not an integer")
        elif pid in ids:
            fail(where, f"id {pid} is also panel {ids[pid]!r}")
        else:
            ids[pid] = p.get("title")
        if not p.get("title"):
            fail(where, "no title")
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy"):
            fail(where, f"gridPos needs integers h, w, x, y: {g}")
        elif g["w"] < 1 or g["h"] < 1 or g["x"] < 0 or g["y"] < 0 or g["x"] + g["w"] > 24:
            fail(where, f"gridPos {g} is outside the 24-column grid")
        elif any(p is q for q in dashboard["panels"]):  # a collapsed row's own may overlap
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                    for y in range(g["y"], g["y"] + g["h"])}
            other = sorted({cells[c] for c in mine if c in cells})
            if other:
                fail(where, f"gridPos {g} overlaps panel(s) {other}")
            cells.update(dict.fromkeys(mine, pid))
        if p.get("type") == "row":
            continue
        if p.get("type") not in required:
            fail(where, f"panel type {p.get('type')!r} is missing from __requires")
        if p.get("datasource") != DATASOURCE:
            fail(where, f"datasource should be {DATASOURCE} like every other panel")
        targets = p.get("targets") or []
        if not targets:
            fail(where, "no targets")
        refs = set()
        for t in targets:
            ref = t.get("refId")
            if not ref or ref in refs:
                fail(where, f"target refId {ref!r} missing or repeated")
            refs.add(ref)
            if t.get("datasource") != DATASOURCE:
                fail(where, f"target {ref}: datasource should be {DATASOURCE}")
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                fail(where, f"target {ref}: empty expr")
                continue
            for var in re.findall(r"\$\{?(\w+)", expr):
                if var not in variables and var not in BUILTIN_VARIABLES:
                    fail(where, f"target {ref}: ${var} is no dashboard variable")
            # Grafana substitutes these before Prometheus sees the query.
            promql = re.sub(r"\$\{?__\w+\}?", "5m", expr)
            promql = re.sub(r"\$\{?\w+\}?", ".*", promql)
            rules.append({"record": f"grafana_panel_{pid}_{ref}", "expr": promql})
    fail.exit("grafana")
    Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    print(f"  {len(panels)} panels, {len(rules)} queries; ids unique, grid consistent")


# --- Prometheus alerts -----------------------------------------------------------------------


def github_anchors(markdown):
    anchors, seen = set(), {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def alerts(rules_path, tests_path, readme_path):
    fail = Failures()
    rules = load_yaml(rules_path, fail) or {}
    tests = load_yaml(tests_path, fail) or {}
    try:
        readme = Path(readme_path).read_text()
    except OSError as e:
        fail(readme_path, f"cannot read: {e}")
        readme = ""
    anchors = github_anchors(readme)
    for link in sorted(set(re.findall(r"\]\(#([^)]+)\)", readme))):
        if link not in anchors:
            fail(readme_path, f"link to #{link}: no heading has that anchor")
    names = []
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue
            name = rule["alert"]
            where = f"{rules_path} alert {name}"
            if name in names:
                fail(where, "defined twice")
            names.append(name)
            if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
                fail(where, "labels.severity must be warning or critical")
            ann = rule.get("annotations", {})
            for key in ("summary", "description", "runbook"):
                if not str(ann.get(key, "")).strip():
                    fail(where, f"annotations.{key} is missing")
            runbook = str(ann.get("runbook", ""))
            prefix = f"{readme_path}#"
            if runbook and not runbook.startswith(prefix):
                fail(where, f"runbook {runbook!r} should point into {prefix}...")
            elif runbook and runbook[len(prefix):] not in anchors:
                fail(where, f"runbook {runbook!r}: {readme_path} has no heading with that anchor")
    if not names:
        fail(rules_path, "no alerts")

    firing, quiet, mentioned = set(), set(), []
    for number, test in enumerate(tests.get("tests", []), 1):
        where = f"{tests_path} test {number}"
        for t in test.get("alert_rule_test", []):
            mentioned.append((where, t.get("alertname")))
            (firing if t.get("exp_alerts") else quiet).add(t.get("alertname"))
        for t in test.get("promql_expr_test", []):
            for name in re.findall(r'alertname\s*=\s*"([^"]+)"', t.get("expr", "")):
                mentioned.append((where, name))
            for sample in t.get("exp_samples") or []:
                labels = sample.get("labels", "")
                for name in re.findall(r'alertname\s*=\s*"([^"]+)"', labels):
                    mentioned.append((where, name))
                    if re.search(r'alertstate\s*=\s*"firing"', labels):
                        firing.add(name)
    for where, name in mentioned:
        if name not in names:
            # promtool passes `exp_alerts: []` for an alert that does not exist at all.
            fail(where, f"names alert {name!r}, which {rules_path} does not define")
    for name in names:
        if name not in firing:
            fail(tests_path, f"{name} has no firing case (ALERTS{{alertstate=\"firing\"}} "
                 "sample or alert_rule_test with exp_alerts)")
        if name not in quiet:
            fail(tests_path, f"{name} has no quiet case (alert_rule_test with exp_alerts: [])")
    fail.exit("alerts")
    print(f"  {len(names)} alerts: each has a runbook section, a firing and a quiet test")


def main(argv):
    commands = {
        "systemd-deps": lambda a: systemd_deps(a[0], a[1:]),
        "kubernetes": lambda a: kubernetes(a[0]),
        "grafana": lambda a: grafana(a[0], a[1]),
        "alerts": lambda a: alerts(a[0], a[1], a[2]),
    }
    if len(argv) < 2 or argv[0] not in commands:
        sys.exit(__doc__)
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
