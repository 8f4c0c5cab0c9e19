"""The deployment files name only things that exist: every path a Dockerfile copies, every module
it runs, the health route it probes, every file and variable the compose file and the Railway
configs refer to. (No Docker engine here: this is what can be checked without building.)
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from starlette.routing import Route

from wabus.embedded import NATS_MAX_PAYLOAD
from wabus.health import health_routes
from wabus.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DOCKERFILES = ("Dockerfile.connector", "Dockerfile.relay")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, argument = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), argument.strip()))
        pending = ""
    return instructions


def health_paths() -> set[str]:
    async def ready(request: Any) -> dict[str, bool]:
        return {}

    return {route.path for route in health_routes(ready) if isinstance(route, Route)}


def dockerignored() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_names_only_what_exists(name: str) -> None:
    instructions = parse_dockerfile(ROOT / name)
    args = {
        i.argument.split("=", 1)[0]: i.argument.split("=", 1)[1]
        for i in instructions
        if i.keyword == "ARG"
    }
    images = [i.argument.split()[0] for i in instructions if i.keyword == "FROM"]
    assert len(images) >= 2, "multi-stage: a build stage and a runtime stage"
    for image in images:
        resolved = args.get(image.strip("${}"), image)
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-[\w.-]+", resolved), (
            f"unpinned base {resolved}"
        )

    copies = [i.argument.split() for i in instructions if i.keyword == "COPY"]
    for words in copies:
        if words[0].startswith("--from="):
            continue
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"{name} copies {source}, which does not exist"
            assert source not in dockerignored(), (
                f"{name} copies {source}, which .dockerignore drops"
            )

    command = json.loads(next(i.argument for i in instructions if i.keyword == "CMD"))
    assert command[:2] == ["python", "-m"]
    assert importlib.util.find_spec(command[2] + ".__main__"), f"no module {command[2]}.__main__"

    healthcheck = next(i.argument for i in instructions if i.keyword == "HEALTHCHECK")
    probed = re.search(r"http://127\.0\.0\.1:%s(/\w+)", healthcheck)
    assert probed, healthcheck
    assert probed.group(1) in health_paths()

    env = " ".join(i.argument for i in instructions if i.keyword == "ENV")
    port = re.search(r"\bPORT=(\d+)", env)
    assert port, "ENV PORT"
    assert [i.argument for i in instructions if i.keyword == "EXPOSE"] == [port.group(1)]
    users = [i.argument for i in instructions if i.keyword == "USER"]
    assert users, "runs as a non-root user"
    assert users[-1] not in {"root", "0"}
    pip_installs = [i.argument for i in instructions if "pip install" in i.argument]
    assert all("constraints.txt" in line for line in pip_installs), "every pip install is pinned"


def test_connector_image_has_ffmpeg_and_a_data_volume() -> None:
    instructions = parse_dockerfile(ROOT / "Dockerfile.connector")
    runs = " ".join(i.argument for i in instructions if i.keyword == "RUN")
    assert re.search(r"apt-get install [^&]*\bffmpeg\b", runs)
    assert [i.argument for i in instructions if i.keyword == "VOLUME"] == ['["/data"]']
    env = " ".join(i.argument for i in instructions if i.keyword == "ENV")
    assert "WABUS_DATA_DIR=/data" in env


def test_only_the_connector_image_installs_neonize() -> None:
    """neonize (a Go library, linux/amd64 only) is the connector's engine: the relay never imports
    it, so its image leaves it out."""
    installs = {
        name: " ".join(
            i.argument for i in parse_dockerfile(ROOT / name) if "pip install" in i.argument
        )
        for name in DOCKERFILES
    }
    assert "[neonize]" in installs["Dockerfile.connector"]
    assert "neonize" not in installs["Dockerfile.relay"]
    assert all("-r constraints.txt" not in line for line in installs.values())  # not everything
    project = _toml(ROOT / "pyproject.toml")["project"]
    assert not any(Requirement(d).name == "neonize" for d in project["dependencies"])
    assert [Requirement(d).name for d in project["optional-dependencies"]["neonize"]] == ["neonize"]


def test_constraints_pin_every_runtime_dependency() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[name.lower().replace("_", "-")] = version
    project = _toml(ROOT / "pyproject.toml")["project"]
    for dependency in [*project["dependencies"], *project["optional-dependencies"]["neonize"]]:
        requirement = Requirement(dependency)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {dependency}"


def _toml(path: Path) -> dict[str, Any]:
    import tomllib

    with path.open("rb") as file:
        return tomllib.load(file)


def _compose(*names: str) -> dict[str, Any]:
    """The compose files merged the simple way compose does for these (maps merged, last wins)."""

    def merge(base: Any, override: Any) -> Any:
        if isinstance(base, dict) and isinstance(override, dict):
            return {k: merge(base.get(k), v) for k, v in override.items()} | {
                k: v for k, v in base.items() if k not in override
            }
        return override

    merged: dict[str, Any] = {}
    for name in names:
        merged = merge(merged, yaml.safe_load((INFRA / name).read_text()))
    return merged


def _settings_variables() -> set[str]:
    return {
        str(field.validation_alias)
        for field in Settings.model_fields.values()
        if field.validation_alias is not None
    }


def _example_env() -> set[str]:
    lines = (INFRA / ".env.example").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("files", [("compose.yaml",), ("compose.yaml", "compose.cluster.yaml")])
def test_compose_names_only_what_exists(files: tuple[str, ...]) -> None:
    compose = _compose(*files)
    services = compose["services"]
    assert {"nats", "postgres", "connector", "relay"} <= set(services)
    text = "".join((INFRA / name).read_text() for name in files)
    for variable in re.findall(r"\$\{(\w+)(?::?[-?][^}]*)?\}", text):
        assert variable in _example_env(), f"${{{variable}}} is not in infra/.env.example"

    for name, service in services.items():
        if "build" in service:
            context = INFRA / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).exists(), name
        mounts = {}
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts {source}, which does not exist"
                mounts[target] = INFRA / source
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        command = service.get("command", [])
        if "-c" in command:
            config = command[command.index("-c") + 1]
            directory, _, file = config.rpartition("/")
            assert (mounts[directory] / file).exists(), f"{name} runs with missing {config}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services

    known = _settings_variables()
    for name in ("connector", "relay"):
        for variable in services[name]["environment"]:
            assert variable in known, f"{name} sets {variable}, which wabus does not read"
    assert "nats" in services["connector"]["environment"]["NATS_URL"]
    assert "nats://connector:" in services["connector"]["environment"]["NATS_URL"]
    assert "nats://relay:" in services["relay"]["environment"]["NATS_URL"]


def test_nats_configs_read_only_variables_compose_sets() -> None:
    compose = _compose("compose.yaml", "compose.cluster.yaml")
    configs = {
        "nats.conf": _compose("compose.yaml")["services"]["nats"]["environment"],
        "cluster.conf": compose["services"]["nats-2"]["environment"],
    }
    accounts = set(re.findall(r"\$(NATS_\w+)", (INFRA / "nats" / "accounts.conf").read_text()))
    for config, environment in configs.items():
        used = set(re.findall(r"\$(NATS_\w+)", (INFRA / "nats" / config).read_text())) | accounts
        assert used <= set(environment), f"{config} needs {used - set(environment)}"


def test_nats_image_bakes_in_the_configs() -> None:
    instructions = parse_dockerfile(INFRA / "nats" / "Dockerfile")
    image = next(i.argument for i in instructions if i.keyword == "FROM")
    assert image == _compose("compose.yaml")["services"]["nats"]["image"], "same NATS as compose"
    for words in (i.argument.split() for i in instructions if i.keyword == "COPY"):
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"infra/nats/Dockerfile copies missing {source}"
    command = json.loads(next(i.argument for i in instructions if i.keyword == "CMD"))
    config = command[command.index("-c") + 1]
    assert (INFRA / "nats" / Path(config).name).exists()
    nats_json = json.loads((INFRA / "railway" / "nats.json").read_text())
    assert (ROOT / nats_json["build"]["dockerfilePath"]).exists()


@pytest.mark.parametrize("service", ["connector", "relay"])
def test_railway_config(service: str) -> None:
    config = json.loads((INFRA / "railway" / f"{service}.json").read_text())
    assert (ROOT / config["build"]["dockerfilePath"]).exists()
    deploy = config["deploy"]
    assert deploy["healthcheckPath"] in health_paths()
    assert deploy["restartPolicyType"] in {"ALWAYS", "ON_FAILURE"}
    if service == "connector":
        assert deploy["numReplicas"] == 1, "one connector until leases share instances"


def test_docs_name_real_commands() -> None:
    """Every `wabus <command>` the deployment doc shows is a command of the CLI."""
    from typer.main import get_command

    from wabus_cli.main import app

    cli = get_command(app)
    text = (ROOT / "docs" / "deploy.md").read_text()
    code = "\n".join(re.findall(r"^```\w*\n(.*?)^```", text, re.MULTILINE | re.DOTALL))
    commands = re.findall(r"^\s*(?:\.venv/bin/)?wabus ([a-z].*)$", code, re.MULTILINE)
    assert commands, "the doc shows at least one wabus command"
    for line in commands:
        words = shlex.split(line)
        assert words[0] in cli.commands, f"docs/deploy.md: no `wabus {words[0]}`"  # type: ignore[attr-defined]


def test_nats_configs_take_a_send_at_the_relays_limit() -> None:
    """A send carries its inline media: the relay's default body limit plus the envelope must fit
    the server's `max_payload`, the same in infra/ as in `wabus dev` and the tests."""
    units = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    for name in ("nats.conf", "cluster.conf"):
        text = (INFRA / "nats" / name).read_text()
        found = re.search(r"^max_payload:\s*(\d+)(KB|MB|GB)?\s*$", text, re.M)
        assert found, f"{name} sets no max_payload"
        limit = int(found.group(1)) * units.get(found.group(2) or "", 1)
        assert limit == NATS_MAX_PAYLOAD, name
        assert Settings().max_send_body_bytes + 16 * 1024 <= limit, name
