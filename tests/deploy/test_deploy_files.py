"""The deployment files work as written: the compose file validates with the Docker tooling
CI installs (.ci/docker.sh), its settings all come from .env.example with no secret in it,
the systemd units pass ``systemd-analyze verify``, the CronJob manifest and the crontab line
schedule a real ``automl nightly`` command, and the example nightly config validates."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from croniter import croniter

from automl.cli import build_parser
from automl.config import build_run_config
from automl.config.nightly import build_nightly_config, zone_info

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_AUTOML = Path(shutil.which("automl") or ROOT / ".venv" / "bin" / "automl")


def parses_as_automl(argv: list[str]) -> None:
    """``argv`` (after the program name) is a valid automl command line."""
    assert argv[0] == "nightly", argv
    build_parser().parse_args(argv)


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor the docker compose plugin is installed; .ci/docker.sh installs it "
                "(run scripts/test_services.sh)")


def compose_config(tmp_path: Path, env_text: str) -> subprocess.CompletedProcess:
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(ROOT / "docker-compose.yml", work / "docker-compose.yml")
    (work / "automl.yaml").write_text("{}\n")
    (work / "nightly.yaml").write_text("{}\n")
    (work / ".env").write_text(env_text)
    return subprocess.run([*compose_command(), "--profile", "nightly", "config"], cwd=work, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work)})


def test_the_compose_file_validates_with_the_env_example(tmp_path):
    proc = compose_config(tmp_path, (ROOT / ".env.example").read_text())
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "dashboard", "worker", "scheduler"}
    scheduler = services["scheduler"]["command"]
    argv = shlex.split(scheduler) if isinstance(scheduler, str) else scheduler
    assert argv[:3] == ["automl", "schedule", "--cron"] and argv[3] == "0 2 * * *"
    assert argv[argv.index("--tz") + 1] == "Europe/Berlin" and argv[argv.index("--budget") + 1] == "6h"
    rest = argv[argv.index("--") + 1:]
    parses_as_automl(rest)
    build_parser().parse_args(argv[1:])  # the scheduler's own flags
    storage = services["scheduler"]["environment"]["AUTOML_STORAGE"]
    assert storage == "postgresql+psycopg2://automl:change-me@postgres:5432/automl"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "change-me"


def test_no_secret_in_the_compose_file_and_every_setting_in_the_env_example(tmp_path):
    text = (ROOT / "docker-compose.yml").read_text()
    env = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
               if line.strip() and not line.startswith("#"))
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    assert used and used <= set(env), f"not in .env.example: {sorted(used - set(env))}"
    assert "--storage" not in text  # the URL with its password comes from the environment only
    assert env["POSTGRES_PASSWORD"] not in text and not re.search(r"automl:automl@", text)
    for line in text.splitlines():
        if re.search(r"PASSWORD\s*:", line):
            assert "${POSTGRES_PASSWORD:?" in line, line  # required, never defaulted
    proc = compose_config(tmp_path, "POSTGRES_USER=automl\n")  # no password: refused, with the reason
    assert proc.returncode != 0 and "POSTGRES_PASSWORD" in proc.stderr


def test_the_systemd_units_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    units = {}
    for name in ("automl-nightly.service", "automl-nightly.timer"):
        text = (DEPLOY / "systemd" / name).read_text()
        # this machine has no /opt/dino-automl, /srv/automl nor user automl: point at what exists
        text = text.replace("/opt/dino-automl/.venv/bin/automl", str(VENV_AUTOML)).replace("/srv/automl", str(tmp_path))
        text = text.replace("User=automl", "User=root").replace("Group=automl", "Group=root")
        units[name] = tmp_path / name
        units[name].write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", *map(str, units.values())], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    service = (DEPLOY / "systemd" / "automl-nightly.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", service, re.M).group(1)
    parses_as_automl(shlex.split(exec_start)[1:])
    timer = (DEPLOY / "systemd" / "automl-nightly.timer").read_text()
    assert re.search(r"^Persistent=true$", timer, re.M)  # a missed night runs once at boot
    calendar = re.search(r"^OnCalendar=(.*)$", timer, re.M).group(1)
    proc = subprocess.run(["systemd-analyze", "calendar", calendar], capture_output=True, text=True)
    assert proc.returncode == 0 and "Next elapse" in proc.stdout, proc.stderr


def test_the_cronjob_manifest():
    (manifest,) = yaml.safe_load_all((DEPLOY / "kubernetes" / "automl-nightly-cronjob.yaml").read_text())
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "CronJob"
    spec = manifest["spec"]
    assert croniter.is_valid(spec["schedule"]) and len(spec["schedule"].split()) == 5
    zone_info(spec["timeZone"])
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    assert container["command"][0] == "automl"
    parses_as_automl(container["command"][1:])
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["AUTOML_STORAGE"]["valueFrom"]  # the password is a Secret, not in the file
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/automl" in mounts and "/srv/automl" in mounts


def test_the_crontab_line():
    lines = [line for line in (DEPLOY / "cron" / "crontab").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    settings = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))
    zone_info(settings["CRON_TZ"])
    (entry,) = [line for line in lines if not re.match(r"^[A-Z_]+=", line)]
    fields = entry.split(None, 5)
    assert croniter.is_valid(" ".join(fields[:5]))
    command = fields[5]
    automl_call = next(part for part in command.split("&&") if "automl nightly" in part)
    argv = shlex.split(automl_call.split(">>")[0])
    assert argv[0].endswith("/automl")
    parses_as_automl(argv[1:])


def test_the_example_nightly_config_validates():
    raw = yaml.safe_load((DEPLOY / "nightly.example.yaml").read_text())
    cfg = build_nightly_config(raw, lambda r: build_run_config(r, use_cpu_variant=False, where="example"), "example")
    assert cfg.nightly.budget == 6 * 3600 and cfg.champion_metric == "test_mAP50"
    assert cfg.nightly.resolved_reserve(cfg.nightly.budget) == 1800
