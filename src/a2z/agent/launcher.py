"""The agent's supervisor: runs ``a2z agent ...`` from the installed ``current`` release,
restarts it into a new release after an upgrade, and rolls back a release that fails to start.

``python -m a2z.agent.launcher agent run --config agent.json ...`` is what the service manager
starts (packaging/systemd/a2z-agent.service). It reads ``install_dir`` from the agent's
config file and runs the agent as a child process, with the package in
``install_dir/current/`` first on its path (or the launcher's own installation while no
release is installed). After an upgrade has swapped ``current`` and passed its health check,
the agent writes the trial marker (``install_dir/upgrade.json``) and exits with
:data:`RESTART_EXIT`; the launcher starts the new release at once. The new release commits
the trial (removes the marker) once it is connected to the server. If it exits before that,
or has not connected within :data:`TRIAL_SECONDS`, the launcher points ``current`` back at
the previous release, notes why in the marker, and starts the previous release, which reports
the upgrade as failed.

The standard library only, on purpose: this module must run whatever state the installed
releases are in, so it imports nothing else of ours, and it stays small.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

RESTART_EXIT = 75  # the agent asks to be started again from ``current`` (EX_TEMPFAIL)
TRIAL_SECONDS = 120.0  # a new release must connect to the server within this long
MARKER = "upgrade.json"  # the trial marker in the install directory
SUPERVISED_ENV = "A2Z_SUPERVISED"  # set for the child: it may exit with RESTART_EXIT
PACKAGE_SUFFIXES = (".whl", ".pyz", ".zip")
POLL_SECONDS = 0.2


class LaunchError(Exception):
    """The launcher cannot start (no config, unreadable config, no install directory)."""


def install_dir_of(agent_args: list[str]) -> Path:
    """The ``install_dir`` of the config file named by ``--config`` in the agent's arguments."""
    try:
        config = Path(agent_args[agent_args.index("--config") + 1])
    except (ValueError, IndexError):
        raise LaunchError("the agent's arguments name no --config file") from None
    try:
        install = json.loads(config.read_text()).get("install_dir", "")
    except (OSError, ValueError) as exc:
        raise LaunchError(f"cannot read {config}: {exc}") from exc
    if not install:
        raise LaunchError(f"{config} sets no install_dir: upgrades have nowhere to go")
    return Path(install)


def package_in(current: Path) -> Path | None:
    """The release package ``current`` points at (None: run the launcher's own install)."""
    if not current.is_dir():
        return None
    unpacked = current / "site"  # a wheel unpacked by the installer (upgrade.UNPACKED_DIR)
    if unpacked.is_dir():
        return unpacked
    found = sorted(p for p in current.iterdir() if p.name.endswith(PACKAGE_SUFFIXES))
    return found[0] if found else None


def read_marker(install: Path) -> dict[str, object] | None:
    """The trial marker, or None (absent or unreadable: a torn write counts as absent)."""
    try:
        marker = json.loads((install / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def write_marker(install: Path, marker: dict[str, object]) -> None:
    """Replace the marker atomically (write aside, rename over)."""
    tmp = install / (MARKER + ".new")
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, install / MARKER)


def point_current(install: Path, target: str | None) -> None:
    """Point ``current`` at ``target`` (a path relative to ``install``), or remove it."""
    current = install / "current"
    if target is None:
        if current.is_symlink():
            current.unlink()
        return
    tmp = install / ".current.new"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, current)


class Launcher:
    """Runs the agent until it stops for good; see the module docstring."""

    def __init__(self, agent_args: list[str], install: Path, trial_seconds: float) -> None:
        self.agent_args = agent_args
        self.install = install
        self.trial_seconds = trial_seconds
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def stop(self, signum: int, _frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: pass it to the agent and end once it has."""
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self) -> int:
        """Start, restart and roll back until the agent exits for another reason."""
        while True:
            marker = read_marker(self.install)
            trial = marker is not None and marker.get("state") == "trial"
            if trial and marker is not None:
                if marker.get("attempted"):  # started before and never committed
                    self._roll_back(marker, "it stopped before it connected to the server")
                    continue
                marker["attempted"] = True
                write_marker(self.install, marker)
            child = self.child = self._start()
            rc = self._watch_trial(child) if trial else child.wait()
            if rc is None:
                continue  # rolled back: start the previous release
            if self.stopping or rc != RESTART_EXIT:
                return rc

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env[SUPERVISED_ENV] = "1"
        package = package_in(self.install / "current")
        if package is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(package), *filter(None, [env.get("PYTHONPATH")])]
            )
        return subprocess.Popen([sys.executable, "-m", "a2z", *self.agent_args], env=env)  # noqa: S603

    def _watch_trial(self, child: subprocess.Popen[bytes]) -> int | None:
        # The trial ends when the new release commits (the marker goes), exits, or times out.
        deadline = time.monotonic() + self.trial_seconds
        while True:
            marker = read_marker(self.install)
            if marker is None or marker.get("state") != "trial":
                return child.wait()  # committed: from now on an ordinary run
            rc = child.poll()
            if rc is not None:
                if self.stopping:
                    return rc
                self._roll_back(marker, f"it exited with status {rc} before it connected")
                return None
            if time.monotonic() >= deadline:
                child.kill()
                child.wait()
                self._roll_back(marker, f"it did not connect within {self.trial_seconds:g} s")
                return None
            time.sleep(POLL_SECONDS)

    def _roll_back(self, marker: dict[str, object], why: str) -> None:
        previous = marker.get("previous")
        point_current(self.install, previous if isinstance(previous, str) else None)
        marker.update(state="failed", reason=f"{marker.get('version')} failed to start: {why}")
        write_marker(self.install, marker)
        print(f"a2z launcher: {marker['reason']}; rolled back", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m a2z.agent.launcher AGENT-ARGS...`` (e.g. ``agent run --config F -i eth1``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    trial = float(os.environ.get("A2Z_TRIAL_SECONDS", TRIAL_SECONDS))
    try:
        launcher = Launcher(args, install_dir_of(args), trial)
    except LaunchError as exc:
        print(f"a2z launcher: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, launcher.stop)
    signal.signal(signal.SIGINT, launcher.stop)
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
