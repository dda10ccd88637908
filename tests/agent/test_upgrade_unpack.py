"""Installing a release wheel: it is unpacked, so compiled modules in it can load, and a member
that would land outside its version directory refuses the whole release."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from a2z.agent.launcher import package_in
from a2z.agent.upgrade import Installer, UpgradeError
from a2z.records.release import ReleaseManifest

SRC = Path(__file__).resolve().parents[2] / "src" / "a2z"


def wheel(tmp_path: Path, version: str, extra: dict[str, str]) -> tuple[ReleaseManifest, bytes]:
    """This agent's sources as a wheel claiming ``version``, plus ``extra`` members.

    ``a2z/agent/native.dat`` stands for a compiled extension: the build's service module reads
    it through the file system at import, which works only once the wheel is unpacked (like
    dlopen of a ``.so``, which zipimport cannot do).
    """
    path = tmp_path / f"a2z_soc-{version}-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for source in sorted(SRC.rglob("*.py")):
            name = "a2z/" + source.relative_to(SRC).as_posix()
            text = source.read_text()
            if name == "a2z/__init__.py":
                text = text.replace('__version__ = "0.1.0"', f'__version__ = "{version}"')
            if name == "a2z/agent/service.py":
                text += (
                    "\n__import__('pathlib').Path(__file__).with_name('native.dat').read_bytes()\n"
                )
            zf.writestr(name, text)
        zf.writestr("a2z/agent/native.dat", b"\x7fELF")
        for name, text in extra.items():
            zf.writestr(name, text)
    package = path.read_bytes()
    manifest = ReleaseManifest(
        version=version, filename=path.name, sha256=hashlib.sha256(package).hexdigest(),
        size=len(package),
    )  # fmt: skip
    return manifest, package


def test_a_wheel_is_unpacked_and_runs_from_its_files(tmp_path: Path) -> None:
    installer = Installer(tmp_path / "install")
    manifest, package = wheel(tmp_path, "9.1.0", {})
    done = installer.install(manifest, package)  # the health check imports the service module
    assert done["version"] == "9.1.0"
    current = installer.current
    assert (current / "site" / "a2z" / "agent" / "native.dat").read_bytes() == b"\x7fELF"
    assert package_in(current) == current / "site"  # what the launcher puts on PYTHONPATH


@pytest.mark.parametrize("bad", ["../escaped.py", "a2z/../../escaped.py", "/tmp/escaped.py"])
def test_a_member_outside_the_version_directory_refuses_the_release(
    tmp_path: Path, bad: str
) -> None:
    installer = Installer(tmp_path / "install")
    good, good_package = wheel(tmp_path, "9.1.0", {})
    installer.install(good, good_package)
    manifest, package = wheel(tmp_path, "9.2.0", {bad: "print('out')\n"})
    with pytest.raises(UpgradeError, match="leaves its directory"):
        installer.install(manifest, package)
    assert (
        not (tmp_path / "escaped.py").exists()
        and not (tmp_path / "install" / "escaped.py").exists()
    )
    assert not (tmp_path / "install" / "versions" / "9.2.0").exists()
    assert installer.current.resolve() == (tmp_path / "install" / "versions" / "9.1.0").resolve()
