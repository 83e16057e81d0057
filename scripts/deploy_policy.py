#!/usr/bin/env python3
"""Project-specific assertions on the deployment files (run by scripts/check-deploy-files).

    deploy_policy.py dockerfile ROOT
    deploy_policy.py compose ROOT
    deploy_policy.py k8s ROOT RENDERED_YAML
    deploy_policy.py replace FILE OLD NEW     (self-test helper: fails if OLD is absent)

ROOT is a directory holding docker/ (the repository, or a self-test copy). Each check
prints one line per violation and exits 1 if there is any, 0 otherwise. The generic
linters (hadolint, the Compose and Kubernetes JSON schemas) check form; these check the
promises docs/operations.md makes: non-root, health checks, probes, resources, pinned
images, no secrets in plain configuration, graceful shutdown budgets.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import yaml

ERRORS: list[str] = []

# Keys whose values are secrets: never literal in compose.yaml, never in a ConfigMap.
SECRET_KEY_PATTERN = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|_KEY$|DATABASE_URL|REDIS_URL)", re.I)
SHUTDOWN_DEFAULT_S = 30  # AGENTID_SHUTDOWN_TIMEOUT_S default (server/src/config.rs)


def fail(where: str, message: str) -> None:
    ERRORS.append(f"{where}: {message}")


def image_tag_problem(image: str) -> str | None:
    """None when the image names an explicit, non-`latest` tag or a digest."""
    if "@sha256:" in image:
        return None
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return f"image `{image}` has no tag (it would mean `latest`)"
    tag = name.rsplit(":", 1)[1]
    if tag == "latest" or not tag:
        return f"image `{image}` uses the `latest` tag"
    return None


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current)
        current = ""
    if current:
        lines.append(current)
    out = []
    for line in lines:
        parts = line.split(None, 1)
        out.append((parts[0].upper(), parts[1] if len(parts) > 1 else ""))
    return out


def check_dockerfile(root: Path) -> None:
    path = root / "docker" / "Dockerfile"
    where = "docker/Dockerfile"
    text = path.read_text()
    instructions = dockerfile_instructions(text)
    args = {}
    for name, rest in instructions:
        if name == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key.strip()] = value.strip()

    stages = [i for i, (name, _) in enumerate(instructions) if name == "FROM"]
    if len(stages) < 2:
        fail(where, "must be a multi-stage build (a builder and a runtime stage)")
    for _, rest in (instructions[i] for i in stages):
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        problem = image_tag_problem(image)
        if problem:
            fail(where, f"FROM: {problem}")
    if stages:
        first_from = instructions[stages[0]][1]
        builder_image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), first_from.split()[0])
        m = re.match(r"rust:(\d+)\.(\d+)", builder_image)
        if not m or (int(m.group(1)), int(m.group(2))) < (1, 89):
            fail(where, f"the builder must be an official rust image of at least the workspace's rust-version 1.89, not `{builder_image}`")
    runtime = instructions[stages[-1]:] if stages else instructions

    def runtime_all(name: str) -> list[str]:
        return [rest for n, rest in runtime if n == name]

    users = runtime_all("USER")
    if not users:
        fail(where, "the runtime stage has no USER: the server would run as root")
    else:
        user = users[-1].split(":")[0].strip()
        if not user.isdigit() or int(user) == 0:
            fail(where, f"the final USER must be a numeric non-zero UID (Kubernetes runAsNonRoot checks it), not `{users[-1]}`")

    if "cargo build --release" not in text or "--locked" not in text or "-p agentid-server" not in text:
        fail(where, "the builder must run `cargo build --release --locked -p agentid-server`")

    healthchecks = runtime_all("HEALTHCHECK")
    if not healthchecks or "agentid-server" not in healthchecks[-1] or "healthcheck" not in healthchecks[-1]:
        fail(where, "the runtime stage needs HEALTHCHECK ... CMD [\"agentid-server\", \"healthcheck\"]")
    elif "CMD [" not in healthchecks[-1]:
        fail(where, "HEALTHCHECK must use the exec form (no shell in the check)")

    for name in ("ENTRYPOINT", "CMD"):
        values = runtime_all(name)
        if not values:
            fail(where, f"the runtime stage has no {name}")
        elif not values[-1].lstrip().startswith("["):
            fail(where, f"{name} must use the exec form so signals reach the server")
    entry = runtime_all("ENTRYPOINT")
    if entry and "agentid-server" not in entry[-1]:
        fail(where, "ENTRYPOINT must run agentid-server")

    stop = runtime_all("STOPSIGNAL")
    if not stop or stop[-1].strip() not in ("SIGTERM", "15"):
        fail(where, "STOPSIGNAL SIGTERM is required (graceful shutdown)")
    if not any("8080" in e for e in runtime_all("EXPOSE")):
        fail(where, "EXPOSE 8080 is missing")
    if not any("/var/lib/agentid" in v for v in runtime_all("VOLUME")):
        fail(where, "VOLUME /var/lib/agentid (the SQLite data directory) is missing")
    if not runtime_all("WORKDIR"):
        fail(where, "the runtime stage has no WORKDIR")
    env_text = " ".join(runtime_all("ENV"))
    for needed in ("AGENTID_LISTEN=0.0.0.0:8080", "AGENTID_DATA_DIR=/var/lib/agentid"):
        if needed not in env_text:
            fail(where, f"ENV {needed} is missing")
    if SECRET_KEY_PATTERN.search(" ".join(re.findall(r"(\w+)=", env_text + " " + " ".join(runtime_all("ARG"))))):
        fail(where, "no secret may be baked into the image through ENV or ARG")
    labels = " ".join(runtime_all("LABEL"))
    for label in ("org.opencontainers.image.title", "org.opencontainers.image.version", "org.opencontainers.image.licenses"):
        if label not in labels:
            fail(where, f"OCI label {label} is missing")

    ignore = root / ".dockerignore"
    if not ignore.is_file():
        fail(".dockerignore", "missing at the repository root")
    else:
        entries = {line.strip().rstrip("/") for line in ignore.read_text().splitlines()}
        for needed in ("target", ".git", "data", ".env"):
            if needed not in entries:
                fail(".dockerignore", f"must exclude `{needed}`")


# --------------------------------------------------------------------------- compose


def check_compose(root: Path) -> None:
    where = "docker/compose.yaml"
    doc = yaml.safe_load((root / "docker" / "compose.yaml").read_text())
    services = doc.get("services") or {}
    for needed in ("agentid", "postgres", "redis"):
        if needed not in services:
            fail(where, f"service `{needed}` is missing")
    named_volumes = set((doc.get("volumes") or {}).keys())

    for name, svc in services.items():
        at = f"{where}: services.{name}"
        if not svc.get("restart") or svc.get("restart") == "no":
            fail(at, "needs a restart policy")
        hc = svc.get("healthcheck") or {}
        if not hc.get("test") or hc.get("disable"):
            fail(at, "needs a health check")
        if "image" in svc:
            problem = image_tag_problem(re.sub(r"\$\{[^}]*:-([^}]*)\}", r"\1", svc["image"]))
            if problem:
                fail(at, problem)
        for vol in svc.get("volumes") or []:
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if source and not source.startswith((".", "/", "~")) and source not in named_volumes:
                fail(at, f"volume `{source}` is not declared under top-level volumes")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
        for key, value in env.items():
            if value is None or not SECRET_KEY_PATTERN.search(key):
                continue
            value = str(value)
            # Every secret-bearing value must interpolate a required variable and
            # contain no literal credential.
            if not re.search(r"\$\{\w+:\?[^}]*\}", value):
                fail(at, f"{key} must come from a required variable (${{NAME:?message}}), never a literal or a default")
            if re.search(r"\$\{\w+:?-[^}]*\}", value):
                fail(at, f"{key} must not have a default value")

    app = services.get("agentid") or {}
    at = f"{where}: services.agentid"
    deps = app.get("depends_on") or {}
    for needed in ("postgres", "redis"):
        dep = deps.get(needed) if isinstance(deps, dict) else None
        if not dep or dep.get("condition") != "service_healthy":
            fail(at, f"depends_on.{needed} needs condition: service_healthy")
    if app.get("read_only") is not True:
        fail(at, "read_only: true (read-only root filesystem) is required")
    env = app.get("environment") or {}
    if not isinstance(env, dict):
        fail(at, "environment must be a mapping")
        env = {}
    if env.get("AGENTID_ENV") != "production":
        fail(at, "AGENTID_ENV must be production")
    if not str(env.get("DATABASE_URL", "")).startswith("postgres://"):
        fail(at, "DATABASE_URL must point at the postgres service")
    if "AGENTID_DATABASE_URL" in env:
        fail(at, "the server reads DATABASE_URL; an unknown AGENTID_* variable stops it")
    user = str(app.get("user", ""))
    if not user or user.split(":")[0] in ("0", "root"):
        fail(at, "must run as a non-root user")
    if "ALL" not in (app.get("cap_drop") or []):
        fail(at, "cap_drop: [ALL] is required")
    grace = str(app.get("stop_grace_period", ""))
    m = re.fullmatch(r"(\d+)s", grace)
    shutdown = int(env.get("AGENTID_SHUTDOWN_TIMEOUT_S", SHUTDOWN_DEFAULT_S))
    if not m or int(m.group(1)) <= shutdown:
        fail(at, f"stop_grace_period must exceed AGENTID_SHUTDOWN_TIMEOUT_S ({shutdown}s), got `{grace}`")
    for port in app.get("ports") or []:
        if isinstance(port, str) and re.fullmatch(r"\d+:\d+", port):
            fail(at, f"port `{port}` publishes on every interface; bind an address explicitly")


# --------------------------------------------------------------------------- kubernetes


def k8s_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def seconds(value) -> int:
    return int(value) if value is not None else 0


def check_k8s(root: Path, rendered: Path) -> None:
    k8s = root / "docker" / "k8s"
    kust = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    listed = kust.get("resources") or []
    for name in sorted(p.name for p in k8s.glob("*.yaml")):
        if name == "kustomization.yaml":
            continue
        if name.startswith("secret") and name in listed:
            fail("docker/k8s/kustomization.yaml", f"{name} is an example and must not be applied")
        elif not name.startswith("secret") and name not in listed:
            fail("docker/k8s/kustomization.yaml", f"{name} is not listed under resources")
    for image in kust.get("images") or []:
        tag = image.get("newTag")
        if image.get("digest"):
            continue
        if not tag or tag == "latest":
            fail("docker/k8s/kustomization.yaml", f"image {image.get('name')} needs a pinned newTag, not `{tag}`")

    docs = k8s_docs(rendered)
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "ConfigMap"):
        if kind not in by_kind:
            fail("docker/k8s", f"the kustomization renders no {kind}")

    config: dict[str, str] = {}
    for cm in by_kind.get("ConfigMap", []):
        for key, value in (cm.get("data") or {}).items():
            config[key] = str(value)
            if SECRET_KEY_PATTERN.search(key) or re.search(r"://[^/\s:@]+:[^@\s]+@", str(value)):
                fail(f"ConfigMap {cm['metadata']['name']}", f"`{key}` looks like a secret; put it in the Secret")
    if config.get("AGENTID_ENV") != "production":
        fail("ConfigMap", "AGENTID_ENV must be production")
    for key in config:
        if key.startswith("AGENTID_") and key in ("AGENTID_DATABASE_URL",):
            fail("ConfigMap", f"{key} is not a server variable (the server reads DATABASE_URL)")
    for secret in by_kind.get("Secret", []):
        fail(f"Secret {secret['metadata']['name']}", "secrets must not be rendered by the kustomization (create them out of band)")

    for dep in by_kind.get("Deployment", []):
        at = f"Deployment {dep['metadata']['name']}"
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        if seconds(spec.get("replicas", 1)) < 2:
            fail(at, "replicas must be at least 2 (PostgreSQL deployments)")
        if pod.get("enableServiceLinks") is not False:
            fail(at, "enableServiceLinks: false is required (service links inject AGENTID_* variables the server refuses)")
        if pod.get("automountServiceAccountToken") is not False:
            fail(at, "automountServiceAccountToken: false (the server never calls the API server)")
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            fail(at, "pod securityContext.runAsNonRoot: true is required")
        if seconds(psc.get("runAsUser", 1)) == 0:
            fail(at, "pod runAsUser must not be 0")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(at, "pod seccompProfile RuntimeDefault is required")
        for c in pod.get("containers", []):
            cat = f"{at} container {c['name']}"
            problem = image_tag_problem(c.get("image", ""))
            if problem:
                fail(cat, problem)
            sc = c.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(cat, "allowPrivilegeEscalation: false is required")
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(cat, "readOnlyRootFilesystem: true is required")
            if sc.get("privileged"):
                fail(cat, "must not be privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                fail(cat, "capabilities.drop: [ALL] is required")
            if sc.get("runAsNonRoot") is False or seconds(sc.get("runAsUser", 1)) == 0:
                fail(cat, "must not run as root")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        fail(cat, f"resources.{kind}.{r} is required")
            for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live"), ("startupProbe", None)):
                p = c.get(probe)
                if not p:
                    fail(cat, f"{probe} is missing")
                    continue
                got = (p.get("httpGet") or {}).get("path")
                if path and got != path:
                    fail(cat, f"{probe} must GET {path}, not {got}")
                if probe == "livenessProbe" and got == "/health/ready":
                    fail(cat, "liveness must not depend on the database")
            env_names = {e["name"]: e for e in c.get("env") or []}
            for needed in ("AGENTID_SECRET_KEY", "DATABASE_URL"):
                e = env_names.get(needed)
                if not e or "secretKeyRef" not in (e.get("valueFrom") or {}):
                    fail(cat, f"{needed} must come from a Secret (valueFrom.secretKeyRef)")
            for name, e in env_names.items():
                if "value" in e and SECRET_KEY_PATTERN.search(name):
                    fail(cat, f"{name} is a secret given as a literal value")
                if name == "AGENTID_DATABASE_URL":
                    fail(cat, "AGENTID_DATABASE_URL is not a server variable (DATABASE_URL is)")
            # Graceful shutdown budget: preStop sleep + server drain must fit the grace period.
            pre = ((c.get("lifecycle") or {}).get("preStop") or {})
            pre_sleep = 0
            if "sleep" in pre:
                pre_sleep = seconds(pre["sleep"].get("seconds"))
            elif "exec" in pre:
                cmd = pre["exec"].get("command") or []
                nums = [int(x) for x in cmd if str(x).isdigit()]
                pre_sleep = nums[-1] if nums and "sleep" in " ".join(map(str, cmd)) else 0
            if pre_sleep <= 0:
                fail(cat, "a preStop sleep is required so endpoints drain before SIGTERM")
            shutdown = int(config.get("AGENTID_SHUTDOWN_TIMEOUT_S", SHUTDOWN_DEFAULT_S))
            grace = seconds(pod.get("terminationGracePeriodSeconds", 30))
            if grace <= pre_sleep + shutdown:
                fail(at, f"terminationGracePeriodSeconds ({grace}) must exceed preStop sleep ({pre_sleep}) + AGENTID_SHUTDOWN_TIMEOUT_S ({shutdown})")

    for pdb in by_kind.get("PodDisruptionBudget", []):
        if pdb["spec"].get("minAvailable") != 1:
            fail(f"PodDisruptionBudget {pdb['metadata']['name']}", "minAvailable must be 1")

    # The example Secret: present, shaped like what the Deployment reads, placeholders only.
    example = k8s / "secret.example.yaml"
    if not example.is_file():
        fail("docker/k8s", "secret.example.yaml is missing")
    else:
        text = example.read_text()
        if "EXAMPLE" not in text.upper().split("APIVERSION")[0]:
            fail("docker/k8s/secret.example.yaml", "must say at its top that it is an example")
        for doc in k8s_docs(example):
            for key, value in (doc.get("stringData") or {}).items():
                if "REPLACE-ME" not in str(value):
                    fail("docker/k8s/secret.example.yaml", f"{key} must be a REPLACE-ME placeholder")
            if doc.get("data"):
                fail("docker/k8s/secret.example.yaml", "use stringData placeholders, no encoded data")


# --------------------------------------------------------------------------- main


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        print(f"self-test mutation not applicable: `{old}` not in {path}", file=sys.stderr)
        sys.exit(3)
    path.write_text(text.replace(old, new, 1))


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "dockerfile":
        check_dockerfile(Path(argv[1]))
    elif len(argv) >= 2 and argv[0] == "compose":
        check_compose(Path(argv[1]))
    elif len(argv) >= 3 and argv[0] == "k8s":
        check_k8s(Path(argv[1]), Path(argv[2]))
    elif len(argv) == 4 and argv[0] == "replace":
        replace(Path(argv[1]), argv[2], argv[3])
        return 0
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for error in ERRORS:
        print(f"POLICY: {error}")
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
