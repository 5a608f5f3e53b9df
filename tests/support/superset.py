"""Apache Superset 6.1 for the tests, in an environment of its own, and a client of its REST API.

Superset pins SQLAlchemy 1.4, pandas 2.1 and pyarrow 18, the gateway needs newer ones: so
Superset lives in its own virtualenv, with ``meshgate-sqlalchemy[superset]`` installed the
way the README tells users (``pip install './gateway/clients/meshgate-sqlalchemy[superset]'``),
pinned by ``superset-constraints.txt``. The environment and a template metadata database
(migrated, initialised, with an ``admin`` user) are built once and cached under
``~/.cache/meshgate/superset-<key>`` (the key hashes what they are built from); the client
package itself is reinstalled from the checkout on each use.

``python -m support.superset`` (from tests/, as ``.ci/run`` does) builds it ahead of the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.launch import free_port, stop_process, wait_until_ready

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "gateway" / "clients" / "meshgate-sqlalchemy"
CONSTRAINTS = CLIENT / "superset-constraints.txt"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meshgate"
ADMIN = ("admin", "admin")
#: a test-only key (Superset refuses to start without one); it encrypts the test databases'
#: passwords in a throwaway metadata database
SECRET_KEY = "meshgate-tests-only-not-a-secret-0123456789abcdef"


@dataclass(frozen=True)
class SupersetEnv:
    """A built Superset environment: its virtualenv and template metadata database."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "venv" / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def template(self) -> Path:
        return self.root / "superset.db"


def _key() -> str:
    digest = hashlib.sha256()
    for path in (CONSTRAINTS, CLIENT / "pyproject.toml"):
        digest.update(path.read_bytes())
    digest.update(f"{sys.version_info[:2]}".encode())
    return digest.hexdigest()[:16]


def _config(path: Path, database: Path) -> Path:
    """A superset_config.py for a test instance on the metadata database ``database``."""
    settings = {
        "SECRET_KEY": SECRET_KEY,
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
        # the tests call the REST API with a JWT and log in through the form
        "WTF_CSRF_ENABLED": False,
        "TALISMAN_ENABLED": False,
        "RATELIMIT_ENABLED": False,
        "AUTH_RATE_LIMITED": False,
        "JWT_ACCESS_TOKEN_EXPIRES": 24 * 3600,  # the admin's token outlives a test session
        # every chart and SQL Lab query reaches the gateway: nothing answered from a cache
        "CACHE_CONFIG": {"CACHE_TYPE": "NullCache"},
        "DATA_CACHE_CONFIG": {"CACHE_TYPE": "NullCache"},
    }
    path.write_text(
        "".join(f"{name} = {value!r}\n" for name, value in settings.items()), encoding="utf-8"
    )
    return path


def _run(argv: list[str | Path], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("ab") as out:
        done = subprocess.run(
            [str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT, env=env, check=False
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{' '.join(map(str, argv[:4]))} failed ({done.returncode}):\n{tail}")


def _superset_env(config: Path) -> dict[str, str]:
    return {**os.environ, "SUPERSET_CONFIG_PATH": str(config), "FLASK_APP": "superset"}


_NAMED = ("--firstname", "Test", "--lastname", "Admin", "--email", "admin@example.com")


def _build(root: Path) -> None:
    """Make the virtualenv and the template metadata database in ``root``."""
    log = root / "build.log"
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", venv], log)
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    source = _client_copy(root)
    _run([*pip, "install", "--quiet", "-c", CONSTRAINTS, f"{source}[superset]"], log)
    env = _superset_env(_config(root / "superset_config.py", root / "superset.db"))
    superset = venv / "bin" / "superset"
    _run([superset, "db", "upgrade"], log, env)
    _run(
        [superset, "fab", "create-admin", "--username", ADMIN[0], "--password", ADMIN[1], *_NAMED],
        log,
        env,
    )
    _run([superset, "init"], log, env)


def _client_copy(where: Path) -> Path:
    """The checkout's client distribution copied to ``where`` (pip builds it in place, and
    the checkout stays as it is)."""
    target = where / "meshgate-sqlalchemy"
    shutil.rmtree(target, ignore_errors=True)
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    return Path(shutil.copytree(CLIENT, target, ignore=ignore))


def superset_env() -> SupersetEnv:
    """The cached Superset environment (built when missing), with the checkout's client."""
    built = SupersetEnv(CACHE / f"superset-{_key()}")
    ready = built.root / "ready"
    if not ready.exists():
        # built where it stays (a virtualenv cannot move: its scripts name their python);
        # ``ready`` is written last, so an interrupted build is started over
        shutil.rmtree(built.root, ignore_errors=True)
        built.root.mkdir(parents=True)
        _build(built.root)
        ready.write_text("built\n", encoding="utf-8")
    pip = [built.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run(
        [*pip, "--no-deps", "--force-reinstall", _client_copy(built.root)],
        built.root / "client.log",
    )
    return built


# --------------------------------------------------------------------------- a running Superset


class SupersetError(AssertionError):
    """A Superset REST call that answered otherwise than the test expected."""


@dataclass
class Superset:
    """A Superset web server on 127.0.0.1, logged in as the test admin."""

    url: str
    env: SupersetEnv
    process: subprocess.Popen
    log_path: Path
    token: str = ""

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        """(HTTP status, JSON answer) of one REST call, as the test admin."""
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read() or b"null")

    def ok(self, method: str, path: str, body: object = None) -> dict:
        status, answer = self.call(method, path, body)
        if status not in (200, 201) or not isinstance(answer, dict):
            raise SupersetError(f"{method} {path}: HTTP {status}: {answer}")
        return answer

    def login(self) -> None:
        answer = self.ok(
            "POST",
            "/api/v1/security/login",
            {"username": ADMIN[0], "password": ADMIN[1], "provider": "db", "refresh": False},
        )
        self.token = answer["access_token"]

    def add_database(self, name: str, uri: str) -> int:
        """Register a database connection; its id."""
        answer = self.ok(
            "POST",
            "/api/v1/database/",
            {"database_name": name, "sqlalchemy_uri": uri, "expose_in_sqllab": True},
        )
        return int(answer["id"])

    def add_dataset(self, database: int, schema: str, table: str) -> int:
        answer = self.ok(
            "POST",
            "/api/v1/dataset/",
            {"database": database, "schema": schema, "table_name": table},
        )
        return int(answer["id"])

    def sql_lab(self, database: int, sql: str, limit: int = 1000) -> tuple[int, dict]:
        """(status, answer) of a synchronous SQL Lab query. ``limit``: the row limit the SQL
        Lab page sends along (it reads it off the SQL's LIMIT; Superset then forces
        ``LIMIT limit + 1`` on the statement and keeps ``limit`` rows)."""
        status, answer = self.call(
            "POST",
            "/api/v1/sqllab/execute/",
            {"database_id": database, "sql": sql, "runAsync": False, "queryLimit": limit},
        )
        assert isinstance(answer, dict), answer
        return status, answer

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _healthy(url: str) -> None:
    with urllib.request.urlopen(url + "/health", timeout=5) as answer:
        if answer.status != 200:
            raise RuntimeError(f"/health answered {answer.status}")


@contextmanager
def running_superset(tmp: Path, timeout: float = 180.0) -> Iterator[Superset]:
    """Superset (gunicorn, one worker) on a copy of the template metadata database, logged in
    as the test admin; stopped on exit."""
    env = superset_env()
    database = tmp / "superset.db"
    shutil.copyfile(env.template, database)
    config = _config(tmp / "superset_config.py", database)
    port = free_port()
    log_path = tmp / "superset.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [
                str(env.bin / "gunicorn"),
                "--workers=1",
                "--worker-class=gthread",
                "--threads=8",
                "--timeout=120",
                f"--bind=127.0.0.1:{port}",
                "superset.app:create_app()",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_superset_env(config),
            cwd=tmp,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, lambda: _healthy(url), log_path, "superset", timeout, 0.5)
        running = Superset(url, env, process, log_path)
        running.login()
        yield running
    finally:
        stop_process(process)


if __name__ == "__main__":
    print(f"Superset environment ready: {superset_env().root}")
