#!/usr/bin/env python3
"""Checks everything under Ops/ that can be checked without a cluster or a Docker engine.

    python3 Ops/validate.py [--llmq PATH] [--metrics SCRAPE.txt] [--require-all]

- every YAML and JSON file parses;
- the Kubernetes manifests validate against the Kubernetes schemas (kubernetes-validate,
  offline, strict) and the KEDA ScaledObjects against Ops/kubernetes/schemas;
- the manifests hang together: probes on /readyz and /healthz, a grace period above the
  drain timeout, each Deployment with its PodDisruptionBudget and ScaledObject, selectors
  that match, KEDA's metric exported by llmq (pending + in flight, never the delayed jobs);
- the systemd unit drains (KillSignal=SIGTERM, TimeoutStopSec above drain_timeout_s) and
  passes `systemd-analyze verify` where systemd-analyze exists;
- the Dockerfile is multi-stage, links the Swift runtime statically and runs as non-root;
- compose has redis, sim, farm and Prometheus, wired together;
- with --metrics, every llmq_* metric the alert rules and the dashboard use is in that scrape;
  with promtool available, the rules pass `promtool check rules`.

Prints one line per check and ends with "N passed, N failed"; exits 1 when any failed.
With --require-all, a missing tool (kubernetes-validate) is a failure instead of a skip.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

OPS = os.path.dirname(os.path.abspath(__file__))
passed, failed, skipped = [], [], []


def check(name, ok, detail=""):
    (passed if ok else failed).append(name)
    print(("ok    " if ok else "FAIL  ") + name + ("" if ok or not detail else ": " + detail))


def skip(name, why):
    skipped.append(name)
    print("skip  " + name + ": " + why)


def rel(p):
    return os.path.relpath(p, OPS)


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def parse_all():
    docs = {}
    for path in sorted(glob.glob(os.path.join(OPS, "**", "*.y*ml"), recursive=True)):
        try:
            docs[path] = load_yaml_docs(path)
            check(f"{rel(path)} parses as YAML", True)
        except yaml.YAMLError as e:
            check(f"{rel(path)} parses as YAML", False, str(e))
    for path in sorted(glob.glob(os.path.join(OPS, "**", "*.json"), recursive=True)):
        try:
            with open(path) as f:
                json.load(f)
            check(f"{rel(path)} parses as JSON", True)
        except ValueError as e:
            check(f"{rel(path)} parses as JSON", False, str(e))
    return docs


def drain_timeout(config_text, where):
    cfg = yaml.safe_load(config_text) or {}
    return float(cfg.get("drain_timeout_s", 30)), cfg


def kubernetes(docs, require_all):
    kdir = os.path.join(OPS, "kubernetes")
    objects = []
    for path, ds in docs.items():
        if path.startswith(kdir + os.sep) and os.path.dirname(path) == kdir and not path.endswith("kustomization.yaml"):
            objects += [(path, d) for d in ds]
    try:
        import kubernetes_validate
    except ImportError:
        kubernetes_validate = None
    with open(os.path.join(kdir, "schemas", "scaledobject.schema.json")) as f:
        so_schema = json.load(f)
    import jsonschema
    for path, obj in objects:
        name = f"{rel(path)}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj.get("apiVersion", "").startswith("keda.sh/"):
            errors = sorted(jsonschema.Draft202012Validator(so_schema).iter_errors(obj), key=lambda e: list(e.path))
            check(f"{name} matches the KEDA ScaledObject schema", not errors,
                  "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors))
            continue
        if kubernetes_validate is None:
            (check if require_all else skip)(f"{name} against the Kubernetes schema", *((False, "pip install kubernetes-validate") if require_all else ("kubernetes-validate is not installed (pip install kubernetes-validate)",)))
            continue
        try:
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
            check(f"{name} matches the Kubernetes {kubernetes_validate.latest_version()} schema (strict)", True)
        except Exception as e:  # ValidationError, SchemaNotFoundError, InvalidSchemaError
            check(f"{name} matches the Kubernetes schema", False, str(getattr(e, "message", e)).splitlines()[0])

    by_kind = {}
    for _, o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    configs = {}
    for cm in by_kind.get("ConfigMap", {}).values():
        for key, text in (cm.get("data") or {}).items():
            configs[key] = text
    kustom = yaml.safe_load(open(os.path.join(kdir, "kustomization.yaml")))
    listed = set(kustom.get("resources", []))
    on_disk = {os.path.basename(p) for p, _ in objects}
    check("kustomization.yaml lists every manifest", listed == on_disk, f"listed {sorted(listed)}, on disk {sorted(on_disk)}")

    deployments = {n: d for n, d in by_kind.get("Deployment", {}).items()
                   if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "gateway"}
    gateways = {n: d for n, d in by_kind.get("Deployment", {}).items() if n not in deployments}
    check("there is a worker Deployment", bool(deployments))
    for name, d in gateways.items():
        gateway_checks(name, d, by_kind, configs)
    modes_scaled = set()
    for name, d in deployments.items():
        spec = d["spec"]
        pod = spec["template"]["spec"]
        c = pod["containers"][0]
        args = c.get("args", [])
        cfg_path = args[args.index("--config") + 1] if "--config" in args else None
        cfg_key = os.path.basename(cfg_path) if cfg_path else None
        check(f"{name}: its --config file is in the ConfigMap", cfg_key in configs, f"{cfg_path} not among {sorted(configs)}")
        if cfg_key not in configs:
            continue
        drain, cfg = drain_timeout(configs[cfg_key], cfg_key)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        check(f"{name}: terminationGracePeriodSeconds ({grace}) is above drain_timeout_s ({drain:g}) with room to spare",
              grace >= drain + 10)
        port = int(args[args.index("--http-port") + 1]) if "--http-port" in args else None
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        check(f"{name}: serves /metrics on a declared port", port is not None and port in ports.values(), f"--http-port {port}, ports {ports}")
        rp, lp = c.get("readinessProbe", {}).get("httpGet", {}), c.get("livenessProbe", {}).get("httpGet", {})
        check(f"{name}: readiness probe is GET /readyz on the metrics port",
              rp.get("path") == "/readyz" and ports.get(rp.get("port"), rp.get("port")) == port)
        check(f"{name}: liveness probe is GET /healthz on the metrics port",
              lp.get("path") == "/healthz" and ports.get(lp.get("port"), lp.get("port")) == port)
        labels = spec["template"]["metadata"]["labels"]
        sel = spec["selector"]["matchLabels"]
        check(f"{name}: selector matches its pod labels", all(labels.get(k) == v for k, v in sel.items()))
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", {}).values()
                if all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())]
        check(f"{name}: has a PodDisruptionBudget", len(pdbs) == 1, f"{len(pdbs)} match")
        sos = [s for s in by_kind.get("ScaledObject", {}).values() if s["spec"]["scaleTargetRef"]["name"] == name]
        check(f"{name}: has a KEDA ScaledObject", len(sos) == 1, f"{len(sos)} target it")
        modes = set((cfg.get("modes") or {}).keys())
        for so in sos:
            for t in so["spec"]["triggers"]:
                q = t["metadata"].get("query", "")
                check(f"{so['metadata']['name']}: scales on pending + in-flight jobs (llmq_queue_depth_jobs)",
                      "llmq_queue_depth_jobs" in q, q)
                # Delayed jobs wait for a time or a provider; more pods would not make them due sooner.
                check(f"{so['metadata']['name']}: does not scale on delayed jobs", "llmq_queue_delayed" not in q, q)
                m = re.search(r'mode="([^"]+)"', q)
                check(f"{so['metadata']['name']}: queries the mode its Deployment serves", m is not None and m.group(1) in modes,
                      f"query {q}, modes {sorted(modes)}")
                if m:
                    modes_scaled.add(m.group(1))
        sec = c.get("securityContext", {})
        check(f"{name}: runs as non-root without privilege escalation",
              pod.get("securityContext", {}).get("runAsNonRoot") is True and sec.get("allowPrivilegeEscalation") is False)
    return configs


def systemd(docs):
    unit_path = os.path.join(OPS, "systemd", "llmq.service")
    text = open(unit_path).read()
    keys = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            k, v = line.split("=", 1)
            keys.setdefault(k.strip(), []).append(v.strip())
    check("llmq.service: KillSignal=SIGTERM", keys.get("KillSignal") == ["SIGTERM"])
    exec_start = keys.get("ExecStart", [""])[0]
    m = re.search(r"--config\s+(\S+)", exec_start)
    cfg_file = os.path.join(OPS, "config", os.path.basename(m.group(1))) if m else None
    drain = drain_timeout(open(cfg_file).read(), cfg_file)[0] if cfg_file and os.path.exists(cfg_file) else 30.0
    stop = keys.get("TimeoutStopSec", ["90"])[0]
    stop_s = float(re.sub(r"s$", "", stop)) if re.fullmatch(r"[0-9.]+s?", stop) else 0
    check(f"llmq.service: TimeoutStopSec ({stop}) is above drain_timeout_s ({drain:g})", stop_s > drain)
    return unit_path, exec_start


def systemd_verify(unit_path, exec_start, llmq):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        skip("systemd-analyze verify llmq.service", "systemd-analyze is not installed")
        return
    binary = exec_start.split()[0]
    with tempfile.TemporaryDirectory() as d:
        text = open(unit_path).read()
        if llmq:
            # verify checks that ExecStart's program exists: point it at the built binary.
            text = text.replace(binary, os.path.abspath(llmq))
        elif not os.path.exists(binary):
            skip("systemd-analyze verify llmq.service", f"{binary} does not exist here; pass --llmq PATH")
            return
        unit = os.path.join(d, "llmq.service")
        open(unit, "w").write(text)
        p = subprocess.run([analyze, "verify", unit], capture_output=True, text=True, timeout=60)
        out = (p.stdout + p.stderr).strip()
        # Complaints about other units of this machine (not ours) do not count.
        ours = [l for l in out.splitlines() if "llmq.service" in l]
        check("systemd-analyze verify llmq.service", p.returncode == 0 and not ours, out)


def dockerfile():
    text = open(os.path.join(OPS, "docker", "Dockerfile")).read()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    check("Dockerfile: multi-stage (a build stage and a runtime stage)", len(froms) >= 2 and " AS " in froms[0].upper())
    check("Dockerfile: links the Swift standard library statically", "--static-swift-stdlib" in text)
    final = text[text.rfind("\nFROM "):]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    check("Dockerfile: the runtime stage runs as a non-root user", bool(users) and users[-1].split(":")[0] not in ("root", "0"))
    check("Dockerfile: copies the binary from the build stage", "COPY --from=build" in final)
    check("Dockerfile: no ADD of remote URLs", not re.search(r"^ADD\s+https?://", text, re.M))
    hadolint = shutil.which("hadolint")
    if hadolint:
        p = subprocess.run([hadolint, "--failure-threshold", "error", os.path.join(OPS, "docker", "Dockerfile")], capture_output=True, text=True)
        check("hadolint Dockerfile", p.returncode == 0, p.stdout + p.stderr)


def compose(docs):
    path = os.path.join(OPS, "compose", "docker-compose.yml")
    c = docs.get(path, [{}])[0]
    services = c.get("services", {})
    for s in ("redis", "sim", "farm", "gateway", "prometheus"):
        check(f"compose: has service {s}", s in services)
    farm = services.get("farm", {})
    check("compose: farm waits for redis to be healthy", farm.get("depends_on", {}).get("redis", {}).get("condition") == "service_healthy")
    grace = str(farm.get("stop_grace_period", "10s")).rstrip("s")
    vols = farm.get("volumes", [])
    cfg = next((v.split(":")[0] for v in vols if v.endswith("farm.yaml:ro") or "farm.yaml" in v), None)
    if cfg:
        drain = drain_timeout(open(os.path.join(OPS, "compose", cfg)).read(), cfg)[0]
        check(f"compose: stop_grace_period ({grace}s) is above drain_timeout_s ({drain:g})", float(grace) > drain)
    prom = yaml.safe_load(open(os.path.join(OPS, "compose", "prometheus.yml")))
    targets = [t for sc in prom.get("scrape_configs", []) for st in sc.get("static_configs", []) for t in st.get("targets", [])]
    check("compose: Prometheus scrapes the farm's /metrics", "farm:9464" in targets, str(targets))
    check("compose: Prometheus scrapes the gateway's /metrics", "gateway:8080" in targets, str(targets))
    check("compose: Prometheus loads the alert rules", any("alerts.yml" in r for r in prom.get("rule_files", [])))
    for svc in services.values():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                check(f"compose: mounted file {src} exists", os.path.exists(os.path.join(OPS, "compose", src)))


def gateway_checks(name, d, by_kind, configs):
    """The gateway Deployment: its config in the ConfigMap with a gateway section, probes on its
    HTTP port, a Service selecting it, and a grace period that lets open streams finish."""
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = c.get("args", [])
    check(f"{name}: runs llmq gateway", args[:1] == ["gateway"], str(args))
    cfg_key = os.path.basename(args[args.index("--config") + 1]) if "--config" in args else None
    check(f"{name}: its --config file is in the ConfigMap", cfg_key in configs, f"{cfg_key} not among {sorted(configs)}")
    if cfg_key in configs:
        cfg = yaml.safe_load(configs[cfg_key]) or {}
        check(f"{name}: its configuration has a gateway section", isinstance(cfg.get("gateway"), dict))
    port = int(args[args.index("--port") + 1]) if "--port" in args else None
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    check(f"{name}: listens on a declared port", port in ports.values(), f"--port {port}, ports {ports}")
    rp, lp = c.get("readinessProbe", {}).get("httpGet", {}), c.get("livenessProbe", {}).get("httpGet", {})
    check(f"{name}: readiness probe is GET /readyz on its port", rp.get("path") == "/readyz" and ports.get(rp.get("port"), rp.get("port")) == port)
    check(f"{name}: liveness probe is GET /healthz on its port", lp.get("path") == "/healthz" and ports.get(lp.get("port"), lp.get("port")) == port)
    labels = d["spec"]["template"]["metadata"]["labels"]
    svcs = [s for s in by_kind.get("Service", {}).values() if all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
    check(f"{name}: a Service sends it traffic", len(svcs) == 1, f"{len(svcs)} Services select it")
    sec = c.get("securityContext", {})
    check(f"{name}: runs as non-root without privilege escalation",
          pod.get("securityContext", {}).get("runAsNonRoot") is True and sec.get("allowPrivilegeEscalation") is False)


def dashboard():
    dash = json.load(open(os.path.join(OPS, "grafana", "llmq-dashboard.json")))
    ids = [p.get("id") for p in dash["panels"]]
    check("dashboard: panel ids are unique", len(ids) == len(set(ids)), f"repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
    cells, overlaps = {}, set()
    for p in dash["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    overlaps.add((cells[(x, y)], p["title"]))
                cells[(x, y)] = p["title"]
    check("dashboard: no two panels overlap", not overlaps and all(x < 24 for x, _ in cells), f"{sorted(overlaps)[:5]}")


def used_metrics():
    names = {}
    rules = yaml.safe_load(open(os.path.join(OPS, "prometheus", "alerts.yml")))
    for g in rules["groups"]:
        for r in g["rules"]:
            for n in re.findall(r"\bllmq_[a-z0-9_]+", r["expr"]):
                names.setdefault(n, set()).add(f"alert {r['alert']}")
    dash = json.load(open(os.path.join(OPS, "grafana", "llmq-dashboard.json")))

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("expr", "query", "definition") and isinstance(v, str):
                    for n in re.findall(r"\bllmq_[a-z0-9_]+", v):
                        names.setdefault(n, set()).add("dashboard")
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    for path in glob.glob(os.path.join(OPS, "kubernetes", "*.yaml")):
        for n in re.findall(r"\bllmq_[a-z0-9_]+", open(path).read()):
            names.setdefault(n, set()).add(f"KEDA ({os.path.basename(path)})")
    return names


def scrape_families(path):
    fams = set()
    for line in open(path):
        m = re.match(r"# TYPE (\S+) ", line)
        if m:
            fams.add(m.group(1))
    return fams


def metrics(scrape, gateway_scrape=None):
    fams = scrape_families(scrape)
    check("the scrape has llmq metric families", any(f.startswith("llmq_") for f in fams), f"families: {sorted(fams)[:10]}")
    # The gateway's metrics come from the gateway's /metrics, not the farm's.
    gateway_fams = scrape_families(gateway_scrape) if gateway_scrape else None
    for name, where in sorted(used_metrics().items()):
        if name.startswith("llmq_gateway_"):
            if gateway_fams is not None:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                check(f"{name} (used by {', '.join(sorted(where))}) is in the gateway's /metrics scrape",
                      name in gateway_fams or (base != name and base in gateway_fams))
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        check(f"{name} (used by {', '.join(sorted(where))}) is in the real /metrics scrape",
              name in fams or (base != name and base in fams))
    promtool = shutil.which("promtool")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], stdin=open(scrape), capture_output=True, text=True)
        out = (p.stdout + p.stderr).strip()
        check("promtool check metrics (naming conventions) on the scrape", p.returncode == 0, out)


def rules():
    promtool = shutil.which("promtool")
    if not promtool:
        skip("promtool check rules", "promtool is not installed (Debian package prometheus)")
        return
    p = subprocess.run([promtool, "check", "rules", os.path.join(OPS, "prometheus", "alerts.yml")], capture_output=True, text=True)
    check("promtool check rules alerts.yml", p.returncode == 0, (p.stdout + p.stderr).strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmq", help="the built llmq binary, for systemd-analyze verify")
    ap.add_argument("--metrics", help="a /metrics scrape of a real farm")
    ap.add_argument("--gateway-metrics", help="a /metrics scrape of a real llmq gateway")
    ap.add_argument("--only-metrics", action="store_true", help="only the checks against the scrape")
    ap.add_argument("--dump-configs", metavar="DIR", help="write the ConfigMap's configuration files into DIR")
    ap.add_argument("--require-all", action="store_true", help="fail, not skip, when kubernetes-validate is missing")
    a = ap.parse_args()
    if a.only_metrics:
        if not a.metrics:
            ap.error("--only-metrics needs --metrics")
        metrics(a.metrics, a.gateway_metrics)
    else:
        docs = parse_all()
        configs = kubernetes(docs, a.require_all)
        unit, exec_start = systemd(docs)
        systemd_verify(unit, exec_start, a.llmq)
        dockerfile()
        compose(docs)
        dashboard()
        rules()
        if a.metrics:
            metrics(a.metrics, a.gateway_metrics)
        if a.dump_configs:
            # The ConfigMap's llmq configurations as files, for the caller to load with llmq's own loader.
            os.makedirs(a.dump_configs, exist_ok=True)
            for name, text in configs.items():
                with open(os.path.join(a.dump_configs, name), "w") as f:
                    f.write(text)
    print(f"{len(passed)} passed, {len(failed)} failed" + (f", {len(skipped)} skipped" if skipped else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
