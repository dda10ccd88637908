"""``upgrade``: download a release over the gateway, verify it, install it, swap, check, or
roll back.

1. Download ``GET /releases/VERSION`` with the agent's certificate (mutual TLS, pinned root).
2. Verify: the manifest names the version asked for; it is newer than the running agent (no
   silent downgrade); the bytes match the manifest's size and SHA-256; the manifest's Ed25519
   signature verifies with the release-signing key, whose certificate the pinned root issued.
3. Install into ``<install_dir>/versions/<version>/`` and swap ``<install_dir>/current`` to it
   atomically (a new symlink renamed over the old one).
4. Health check: the new package, through ``current``, must import the agent and report its
   version, in a fresh interpreter, within a deadline. If not, ``current`` is swapped back.

5. Restart: under the launcher (a2z.agent.launcher, what the service manager runs) the agent
   writes the trial marker and exits with RESTART_EXIT without answering; the launcher starts
   the new version, which answers the command once it is connected (or, if it fails to start,
   the launcher rolls ``current`` back and the previous version answers it as failed). Without
   the launcher the process keeps its code and the new version runs at the next start.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import logging
import os
import shutil
import ssl
import subprocess
import sys
import urllib.parse
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from packaging.version import InvalidVersion, Version

from a2z import __version__
from a2z.agent.commands import CommandError, Upgrader
from a2z.agent.config import AgentConfig
from a2z.agent.identity import IdentityFiles
from a2z.agent.launcher import (
    RESTART_EXIT,
    SUPERVISED_ENV,
    read_marker,
    write_marker,
)
from a2z.records import CommandResult
from a2z.records.control import MAX_REASON_CHARS
from a2z.records.release import MANIFEST_HEADER, MAX_PACKAGE_BYTES, ReleaseManifest, signed_bytes

HEALTH_TIMEOUT_S = 60.0
# What the health check runs with the new package first on the path: import the agent's stack
# and print the version it carries.
HEALTH_CHECK = "import a2z, a2z.agent.service, a2z.agent.upgrade; print(a2z.__version__)"


class UpgradeError(CommandError):
    """The release was refused or did not install; nothing changed (or it was rolled back)."""


UNPACKED_DIR = "site"
"""Where a wheel's files are unpacked inside its version directory; the launcher puts it on
PYTHONPATH. A built agent wheel carries compiled extension modules (mypyc), which the
interpreter can load only from real files, never from inside a zip."""


def unpack_wheel(wheel: Path, into: Path) -> None:
    """Extract ``wheel`` (a zip) into ``into``, refusing any member that would land outside it.

    The package is signed and verified before this, but an unpacker that trusts member names is
    one bug away from writing anywhere the agent can, so names are checked all the same.
    """
    root = into.resolve()
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.infolist():
                dest = (root / member.filename).resolve()
                if not dest.is_relative_to(root) or member.filename.startswith("/"):
                    raise UpgradeError(f"package member {member.filename!r} leaves its directory")
            zf.extractall(root)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UpgradeError(f"cannot unpack {wheel.name}: {exc}") from exc


def release_key(files: IdentityFiles) -> ed25519.Ed25519PublicKey:
    """The release-signing key, from its certificate, checked against the pinned root."""
    try:
        cert = x509.load_pem_x509_certificate(files.release.read_bytes())
        root = x509.load_pem_x509_certificate(files.root.read_bytes())
        cert.verify_directly_issued_by(root)
    except FileNotFoundError as exc:
        raise UpgradeError("no release-signing certificate (re-enroll this agent)") from exc
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise UpgradeError(
            f"release-signing certificate not issued by the pinned root: {exc}"
        ) from exc
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UpgradeError("release-signing certificate does not hold an Ed25519 key")
    return key


def fetch_release(server: str, tls: ssl.SSLContext, version: str) -> tuple[ReleaseManifest, bytes]:
    """The package and its manifest from the gateway (blocking)."""
    url = urllib.parse.urlsplit(server)
    host, port = url.hostname or "", url.port or 443
    conn = http.client.HTTPSConnection(host, port, context=tls, timeout=60)
    try:
        conn.request("GET", f"/releases/{urllib.parse.quote(version, safe='')}")
        resp = conn.getresponse()
        body = resp.read(MAX_PACKAGE_BYTES + 1)
        header = resp.getheader(MANIFEST_HEADER) or ""
    except OSError as exc:
        raise UpgradeError(f"cannot download release {version}: {exc}") from exc
    finally:
        conn.close()
    if resp.status != 200:
        raise UpgradeError(f"server answered {resp.status} for release {version}")
    if len(body) > MAX_PACKAGE_BYTES:
        raise UpgradeError(f"release {version} is larger than {MAX_PACKAGE_BYTES} bytes")
    try:
        return msgspec.json.decode(header, type=ReleaseManifest), body
    except msgspec.DecodeError as exc:
        raise UpgradeError(f"release {version} came without a valid manifest: {exc}") from exc


def verify(
    manifest: ReleaseManifest,
    package: bytes,
    key: ed25519.Ed25519PublicKey,
    *,
    wanted: str,
    running: str,
) -> None:
    """Raise UpgradeError unless the package is the signed, newer release asked for."""
    try:
        new, asked, now = Version(manifest.version), Version(wanted), Version(running)
    except InvalidVersion as exc:
        raise UpgradeError(f"not a version: {exc}") from exc
    if new != asked:
        raise UpgradeError(f"asked for {wanted}, the server sent {manifest.version}")
    if new <= now:
        raise UpgradeError(f"refusing to downgrade: {manifest.version} is not newer than {running}")
    if len(package) != manifest.size or hashlib.sha256(package).hexdigest() != manifest.sha256:
        raise UpgradeError("package does not match its manifest (size or SHA-256): tampered")
    try:
        key.verify(base64.b64decode(manifest.signature, validate=True), signed_bytes(manifest))
    except (InvalidSignature, ValueError) as exc:
        raise UpgradeError(
            "release signature does not verify with the release-signing key"
        ) from exc
    if "/" in manifest.filename or manifest.filename.startswith("."):
        raise UpgradeError(f"unsafe package file name {manifest.filename!r}")


@dataclass
class Installer:
    """Versioned directories under ``root`` and the ``current`` link that picks one."""

    root: Path
    health_timeout_s: float = HEALTH_TIMEOUT_S

    @property
    def current(self) -> Path:
        """The link the service manager starts the agent through."""
        return self.root / "current"

    def install(self, manifest: ReleaseManifest, package: bytes) -> dict[str, Any]:
        """Write, swap, check; swap back (and raise) if the check fails."""
        versions = self.root / "versions"
        target = versions / manifest.version
        if target.exists():
            shutil.rmtree(target)  # a previous attempt that failed its check
        target.mkdir(parents=True)
        path = target / manifest.filename
        with open(path, "wb") as fh:
            fh.write(package)
            fh.flush()
            os.fsync(fh.fileno())
        if manifest.filename.endswith(".whl"):
            try:
                unpack_wheel(path, target / UNPACKED_DIR)
            except UpgradeError:
                shutil.rmtree(target, ignore_errors=True)
                raise
        previous = os.readlink(self.current) if self.current.is_symlink() else None
        self._point(Path("versions") / manifest.version)
        problem = self._health(manifest)
        if problem:
            if previous is not None:
                self._point(Path(previous))
            else:
                self.current.unlink()
            shutil.rmtree(target, ignore_errors=True)
            raise UpgradeError(
                f"{manifest.version} failed its health check ({problem}); rolled back"
            )
        return {"version": manifest.version, "previous": previous, "path": str(path)}

    def _point(self, target: Path) -> None:
        # A new link under a temporary name, renamed over ``current``: rename(2) is atomic, so
        # ``current`` always names one complete version.
        tmp = self.root / ".current.new"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, self.current)

    def _health(self, manifest: ReleaseManifest) -> str:
        package = self.current / manifest.filename
        unpacked = self.current / UNPACKED_DIR
        env = {**os.environ, "PYTHONPATH": str(unpacked if unpacked.is_dir() else package)}
        try:
            done = subprocess.run(  # noqa: S603 (our interpreter, our fixed program)
                [sys.executable, "-c", HEALTH_CHECK],
                env=env, capture_output=True, text=True, timeout=self.health_timeout_s,
                cwd=self.root, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return f"no answer within {self.health_timeout_s:g} s"
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            return f"exit {done.returncode}: {lines[-1] if lines else 'no output'}"[:300]
        reported = done.stdout.strip()
        if reported != manifest.version:
            return f"it reports version {reported!r}"
        return ""


log = logging.getLogger(__name__)


def make_upgrader(
    config: AgentConfig,
    *,
    running: str = __version__,
    restart: Callable[[], None] | None = None,
) -> Upgrader | None:
    """The ``upgrade`` command for this agent, or None if it has no install directory.

    ``restart`` ends the process for the launcher to start the new version (default: exit
    with RESTART_EXIT, only when the launcher runs this agent).
    """
    if not config.install_dir or not config.identity_dir:
        return None
    files = IdentityFiles(Path(config.identity_dir))
    installer = Installer(Path(config.install_dir))
    if restart is None and os.environ.get(SUPERVISED_ENV):
        restart = _exit_for_restart

    def run(args: dict[str, Any], command_id: str) -> dict[str, Any]:
        wanted = str(args.get("version", ""))
        key = release_key(files)
        manifest, package = fetch_release(config.server, files.client_context(), wanted)
        verify(manifest, package, key, wanted=wanted, running=running)
        done = installer.install(manifest, package)
        if restart is None:
            return {**done, "restarted": False}
        # Not answered here: the new version answers once it runs and is connected, or the
        # previous one, rolled back to, answers with why the new one failed to start.
        write_marker(installer.root, {
            "state": "trial", "command_id": command_id, "version": manifest.version,
            "previous": done["previous"], "path": done["path"],
        })  # fmt: skip
        log.warning("upgraded to %s; restarting into it", manifest.version)
        restart()
        return {**done, "restarted": True}  # a test's restart returns

    async def upgrade(args: dict[str, Any], command_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(run, args, command_id)

    return upgrade


def _exit_for_restart() -> None:
    # Like kill -9 for the data: the spool is crash-safe, so unacknowledged batches go out
    # again from the new version; flows still open in the flow table are lost, as on any stop.
    for handler in logging.getLogger().handlers + logging.getLogger("a2z").handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(RESTART_EXIT)


@dataclass(frozen=True)
class PendingUpgrade:
    """An upgrade command this start settles: our own trial (commit once connected) or the
    failed trial of a newer version the launcher rolled back from."""

    install: Path
    result: CommandResult  # what the command is answered with
    ours: bool  # True: this process is the new version on trial

    def finish(self) -> None:
        """Remove the marker: the trial is over (committed, or its failure is reported)."""
        (self.install / "upgrade.json").unlink(missing_ok=True)


def pending_upgrade(install_dir: str, running: str = __version__) -> PendingUpgrade | None:
    """The upgrade waiting on this start, from the launcher's marker (None: nothing)."""
    if not install_dir:
        return None
    install = Path(install_dir)
    marker = read_marker(install)
    if marker is None or not isinstance(marker.get("command_id"), str):
        return None
    command_id, version = str(marker["command_id"]), str(marker.get("version", ""))
    if marker.get("state") == "failed":
        reason = str(marker.get("reason", "it failed to start"))
        error = f"{reason}; rolled back to {running}"[:MAX_REASON_CHARS]
        return PendingUpgrade(install, CommandResult(id=command_id, ok=False, error=error), False)
    if marker.get("state") == "trial" and version == running:
        result = {
            "version": version, "previous": marker.get("previous"), "path": marker.get("path"),
            "restarted": True,
        }  # fmt: skip
        return PendingUpgrade(install, CommandResult(id=command_id, ok=True, result=result), True)
    return None
