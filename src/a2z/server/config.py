"""Server settings: where the data lives and where to listen."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path("a2z-data")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server needs to start; defaults give the embedded single-process mode."""

    data_dir: Path = DEFAULT_DATA_DIR
    db_url: str | None = None  # default: SQLite file in data_dir
    app_role: str = "a2z_app"  # PostgreSQL role requests run as (owns nothing, RLS applies)
    pool_size: int = 10
    host: str = "127.0.0.1"
    port: int = 8000

    @property
    def database_url(self) -> str:
        """The configured URL, or the embedded SQLite file."""
        return self.db_url or f"sqlite:///{self.data_dir / 'a2z.db'}"


def load_secret(data_dir: Path) -> bytes:
    """Read the token-signing secret, creating it (mode 0600) on first start."""
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_bytes()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    return secret
