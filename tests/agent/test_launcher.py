"""The agent's launcher without a server: a trial that never connects is rolled back in time,
and the shipped systemd unit starts it with arguments the agent accepts."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import zipfile
from pathlib import Path

from a2z.agent.launcher import MARKER, Launcher, install_dir_of, read_marker
from a2z.cli import build_parser

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "a2z-agent.service"


def test_a_trial_that_never_connects_is_killed_and_rolled_back(tmp_path: Path) -> None:
    install = tmp_path / "install"
    (install / "versions" / "1.0.0").mkdir(parents=True)
    (install / "versions" / "2.0.0").mkdir(parents=True)
    (install / "current").symlink_to("versions/2.0.0")
    (install / MARKER).write_text(
        json.dumps({"state": "trial", "command_id": "c1", "version": "2.0.0",
                    "previous": "versions/1.0.0"})
    )  # fmt: skip
    # "a2z --help" stands in for the agent: the trial release hangs (it sleeps), which the
    # deadline ends; the previous one (this checkout, after the rollback) exits at once.
    with zipfile.ZipFile(install / "versions" / "2.0.0" / "a2z_soc-2.0.0.zip", "w") as zf:
        zf.writestr("a2z/__init__.py", "")
        zf.writestr("a2z/__main__.py", "import time\ntime.sleep(60)\n")
    launcher = Launcher(["--help"], install, trial_seconds=1.0)
    assert launcher.run() == 0
    assert os.readlink(install / "current") == "versions/1.0.0"
    marker = read_marker(install)
    assert marker is not None and marker["state"] == "failed"
    assert "2.0.0 failed to start: it did not connect within 1 s" in str(marker["reason"])


def test_the_systemd_unit_runs_the_launcher_with_valid_agent_arguments(tmp_path: Path) -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[1:3] == ["-m", "a2z.agent.launcher"]
    agent_args = argv[3:]
    parsed = build_parser().parse_args(agent_args)  # what the launcher passes to `a2z`
    assert (parsed.command, parsed.agent_command, parsed.workers) == ("agent", "run", 2)
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"install_dir": "/var/lib/a2z-agent/install"}))
    agent_args[agent_args.index("--config") + 1] = str(config)
    assert install_dir_of(agent_args) == Path("/var/lib/a2z-agent/install")
