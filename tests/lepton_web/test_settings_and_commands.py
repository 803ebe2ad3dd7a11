"""Production settings refuse to start half-configured; bootstrap and lepton_user commands."""

import json
import os
import re
import secrets
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.test import RequestFactory
from rest_framework.authtoken.models import Token

from lepton_web.accounts import token_key_digest
from models_app.models import BaseModel

ROOT = Path(__file__).resolve().parents[2]
# Every variable settings.py reads (by name or by prefix), so a subprocess sees only what its
# test gives it.
SETTINGS_VARIABLES = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "PYTEST_VERSION",
    "TIME_ZONE",
    "MEDIA_ROOT",
    "BEHIND_TLS_PROXY",
    "WORKER_ONLINE_WINDOW_SECONDS",
    "LOG_LEVEL",
)
SETTINGS_PREFIXES = (
    "LEPTON_",
    "DATABASE_",
    "SESSION_",
    "STORAGE_",
    "SECURE_",
    "CELERY_",
    "JOB_",
    "DATASET_",
    "DJANGO_",
    "TRAINING_",
    "BASE_MODEL_",
    "LOGIN_",
)


def login_request():
    """A login form's request: django-axes counts every password check against one."""
    return RequestFactory().post("/login/", REMOTE_ADDR="10.9.9.9")


def settings_env(tmp_path: Path, **variables: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SETTINGS_VARIABLES and not k.startswith(SETTINGS_PREFIXES)
    }
    # Empty values, not absent ones, so a developer's .env cannot fill them in (load_dotenv
    # never overrides a variable that is set, even to "").
    env.update(DEBUG="", SECRET_KEY="", ALLOWED_HOSTS="", DATABASE_URL="", CELERY_BROKER_URL="")
    env.update({"LEPTON_VAR_DIR": str(tmp_path), "LEPTON_BIND": "", "LEPTON_HTTPS": ""})
    env.update(variables)
    return env


def manage(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=settings_env(tmp_path, **variables),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def manage_check_deploy(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    return manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **variables)


PRINT_SETTINGS = (
    "from django.conf import settings; import json; print(json.dumps({'debug': settings.DEBUG, "
    "'hosts': settings.ALLOWED_HOSTS, 'key': settings.SECRET_KEY, "
    "'secure_cookies': getattr(settings, 'SESSION_COOKIE_SECURE', False), "
    "'static': settings.STORAGES['staticfiles']['BACKEND']}))"
)


def settings_seen(tmp_path: Path, **variables: str) -> dict:
    result = manage(tmp_path, "shell", "-c", PRINT_SETTINGS, **variables)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def password_in(output: str) -> str:
    return re.search(r"^\s*password: (\S+)$", output, re.MULTILINE).group(1)


# --- settings ---------------------------------------------------------------------------------
def test_production_settings_pass_the_deploy_check(tmp_path):
    result = manage_check_deploy(
        tmp_path,
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="console.example.com",
        LEPTON_HTTPS="true",
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_default_install_runs_with_debug_off_and_serves_its_static_files(tmp_path):
    seen = settings_seen(tmp_path)

    assert seen["debug"] is False
    assert seen["static"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    # run.sh serves plain HTTP: Secure cookies would log nobody in.
    assert seen["secure_cookies"] is False


def test_debug_is_on_only_when_a_developer_asks_for_it(tmp_path):
    assert settings_seen(tmp_path, DEBUG="true")["debug"] is True


def test_a_secret_key_is_generated_once_into_var_readable_only_by_its_owner(tmp_path):
    first = settings_seen(tmp_path)
    second = settings_seen(tmp_path)

    key_file = tmp_path / "secret_key"
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert first["key"] == second["key"] == key_file.read_text().strip()
    assert len(first["key"]) >= 50


def test_a_secret_key_from_the_environment_wins_and_nothing_is_written(tmp_path):
    key = secrets.token_urlsafe(50)

    assert settings_seen(tmp_path, SECRET_KEY=key)["key"] == key
    assert not (tmp_path / "secret_key").exists()


def test_allowed_hosts_come_from_the_bind_address_plus_localhost(tmp_path):
    hosts = settings_seen(tmp_path, LEPTON_BIND="10.1.2.3:9000")["hosts"]

    assert hosts == ["localhost", "127.0.0.1", "[::1]", "10.1.2.3"]


def test_allowed_hosts_from_the_environment_replace_the_bind_address(tmp_path):
    hosts = settings_seen(
        tmp_path, LEPTON_BIND="10.1.2.3:9000", ALLOWED_HOSTS="console.example.com"
    )["hosts"]

    assert hosts == ["console.example.com"]


def test_https_marks_cookies_secure(tmp_path):
    assert settings_seen(tmp_path, LEPTON_HTTPS="true")["secure_cookies"] is True


def test_a_server_error_shows_the_plain_error_page_not_the_debug_page(client, analyst, monkeypatch):
    def broken():
        raise RuntimeError("postgres://secret@db/console")

    monkeypatch.setattr("lepton_web.views.dashboard_counts", broken)
    client.raise_request_exception = False
    client.force_login(analyst)

    response = client.get("/")

    assert response.status_code == 500
    body = response.content.decode()
    assert "Server error" in body
    assert "Traceback" not in body
    assert "postgres://" not in body
    assert "DATABASE_URL" not in body


def test_debug_that_is_not_true_or_false_refuses_to_start(tmp_path):
    result = manage_check_deploy(tmp_path, DEBUG="yes")

    assert result.returncode != 0
    assert "DEBUG must be 'true' or 'false', not 'yes'." in result.stderr


def test_a_checkpoint_sync_mode_that_does_not_exist_refuses_to_start(tmp_path):
    result = manage_check_deploy(tmp_path, TRAINING_CHECKPOINT_SYNC="always")

    assert result.returncode != 0
    assert "TRAINING_CHECKPOINT_SYNC must be auto, on or off, not 'always'." in result.stderr


# --- lepton_bootstrap -------------------------------------------------------------------------
@pytest.fixture
def bootstrap(db, monkeypatch):
    monkeypatch.delenv("LEPTON_ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("LEPTON_URL", raising=False)

    def run() -> str:
        out = StringIO()
        call_command("lepton_bootstrap", stdout=out)
        return out.getvalue()

    return run


def test_bootstrap_creates_exactly_one_superuser_named_admin(bootstrap):
    bootstrap()

    users = get_user_model().objects.all()
    assert [(u.username, u.is_superuser, u.is_staff) for u in users] == [("admin", True, True)]
    assert list(users[0].groups.values_list("name", flat=True)) == ["admin"]


def test_bootstrap_prints_a_password_that_logs_the_admin_in(bootstrap):
    output = bootstrap()

    user = authenticate(login_request(), username="admin", password=password_in(output))
    assert user == get_user_model().objects.get(username="admin")


def test_bootstrap_prints_the_console_url(bootstrap):
    output = bootstrap()

    assert output.splitlines()[-1] == "Lepton Console: open http://127.0.0.1:8000/"


def test_bootstrap_registers_the_bundled_model_as_the_default(bootstrap):
    bootstrap()

    base_model = BaseModel.objects.get()
    assert (base_model.name, base_model.source, base_model.is_default, base_model.architecture) == (
        "all-MiniLM-L6-v2",
        "bundled",
        True,
        "BertModel",
    )
    assert Path(base_model.location, "config.json").is_file()


def test_bootstrap_records_the_bundled_models_real_parameter_count(bootstrap):
    bootstrap()

    assert BaseModel.objects.get().parameter_count == 22713216


def test_bootstrap_takes_the_default_from_another_base_model(bootstrap):
    BaseModel.objects.create(
        name="my-bert", source="local", location="/models/bert", is_default=True
    )

    bootstrap()

    assert list(BaseModel.objects.values_list("name", "is_default")) == [
        ("all-MiniLM-L6-v2", True),
        ("my-bert", False),
    ]


def test_second_bootstrap_creates_nothing_and_prints_no_password(bootstrap):
    bootstrap()
    users_before = list(get_user_model().objects.values_list("pk", "username", "password"))
    models_before = list(BaseModel.objects.values_list("pk", "name", "is_default"))

    output = bootstrap()

    assert list(get_user_model().objects.values_list("pk", "username", "password")) == users_before
    assert list(BaseModel.objects.values_list("pk", "name", "is_default")) == models_before
    assert "password:" not in output
    assert (
        "An admin account already exists. Forgot its password? "
        "Run: python manage.py lepton_user password admin"
    ) in output.splitlines()


# --- lepton_user -------------------------------------------------------------------------------
def lepton_user(*args: str) -> str:
    out = StringIO()
    call_command("lepton_user", *args, stdout=out)
    return out.getvalue()


def test_user_create_makes_a_user_in_the_role_with_a_working_password(db):
    output = lepton_user("create", "ana", "--role", "analyst", "--email", "ana@example.com")

    user = get_user_model().objects.get()
    assert (user.username, user.email, user.is_superuser, user.is_staff) == (
        "ana",
        "ana@example.com",
        False,
        False,
    )
    assert list(user.groups.values_list("name", flat=True)) == ["analyst"]
    assert output.splitlines()[0] == "Created ana (analyst)."
    assert authenticate(login_request(), username="ana", password=password_in(output)) == user


def test_user_create_as_admin_makes_a_superuser(db):
    lepton_user("create", "root", "--role", "admin")

    user = get_user_model().objects.get()
    assert (user.is_superuser, user.is_staff) == (True, True)


def test_user_create_with_token_prints_the_users_api_token(client, db):
    output = lepton_user("create", "bot", "--role", "viewer", "--token")

    key = output.splitlines()[-1].removeprefix("token: ")
    # Only the key's digest is stored: a copy of the database holds no usable token.
    assert Token.objects.get(user__username="bot").key == token_key_digest(key) != key
    response = client.get("/api/v1/me/", headers={"Authorization": f"Token {key}"})
    assert response.json()["username"] == "bot"


def test_user_create_refuses_an_unknown_role_and_creates_nobody(db):
    with pytest.raises(CommandError, match=r"argument --role: invalid choice: 'boss'"):
        lepton_user("create", "ana", "--role", "boss")

    assert not get_user_model().objects.exists()


def test_user_create_refuses_an_existing_username_and_keeps_the_user(db):
    lepton_user("create", "ana", "--role", "viewer")
    before = list(get_user_model().objects.values_list("pk", "password", "is_superuser"))

    with pytest.raises(CommandError, match=r"^A user named 'ana' already exists\.$"):
        lepton_user("create", "ana", "--role", "admin")

    assert list(get_user_model().objects.values_list("pk", "password", "is_superuser")) == before
    assert list(get_user_model().objects.get().groups.values_list("name", flat=True)) == ["viewer"]


def test_user_token_issues_a_new_token_and_revokes_the_old_one(client, db):
    lepton_user("create", "bot", "--role", "viewer")

    first = lepton_user("token", "bot").strip()
    second = lepton_user("token", "bot").strip()

    assert first != second
    assert Token.objects.get(user__username="bot").key == token_key_digest(second)
    for key, status in ((first, 401), (second, 200)):
        response = client.get("/api/v1/me/", headers={"Authorization": f"Token {key}"})
        assert response.status_code == status
    # The stored digest is not a key either.
    digest = Token.objects.get(user__username="bot").key
    response = client.get("/api/v1/me/", headers={"Authorization": f"Token {digest}"})
    assert response.status_code == 401


def test_tokens_issued_before_hashing_keep_working_after_the_migration(client, db):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("lepton_web.migrations.0003_user_tokens_hashed")
    lepton_user("create", "bot", "--role", "viewer")
    plain = "0123456789abcdef0123456789abcdef01234567"  # as DRF stored keys before
    Token.objects.create(user=get_user_model().objects.get(username="bot"), key=plain)

    migration.forwards(apps, None)

    assert Token.objects.get(user__username="bot").key == token_key_digest(plain)
    response = client.get("/api/v1/me/", headers={"Authorization": f"Token {plain}"})
    assert (response.status_code, response.json()["username"]) == (200, "bot")


def test_admin_lists_and_revokes_tokens_but_shows_and_adds_no_key(client, db):
    lepton_user("create", "root", "--role", "admin")
    key = lepton_user("token", "root").strip()
    client.force_login(get_user_model().objects.get(username="root"))
    digest = Token.objects.get().key

    listing = client.get("/admin/authtoken/tokenproxy/")

    assert listing.status_code == 200
    assert "root" in listing.content.decode()
    assert key not in listing.content.decode()
    assert digest not in listing.content.decode()
    assert client.get("/admin/authtoken/tokenproxy/add/").status_code == 403


def test_user_token_authenticates_api_requests(client, db):
    lepton_user("create", "bot", "--role", "viewer")
    key = lepton_user("token", "bot").strip()

    response = client.get("/api/v1/me/", headers={"Authorization": f"Token {key}"})

    assert response.status_code == 200
    assert response.json()["username"] == "bot"
    assert response.json()["roles"] == ["viewer"]


def test_user_token_for_an_unknown_user_is_refused_and_creates_no_token(db):
    with pytest.raises(CommandError, match=r"^No user named 'ghost'\.$"):
        lepton_user("token", "ghost")

    assert not Token.objects.exists()


def test_user_password_sets_a_new_password_that_replaces_the_old_one(db):
    old = password_in(lepton_user("create", "ana", "--role", "analyst"))

    new = password_in(lepton_user("password", "ana"))

    assert new != old
    assert (
        authenticate(login_request(), username="ana", password=new)
        == get_user_model().objects.get()
    )
    assert authenticate(login_request(), username="ana", password=old) is None


def test_user_password_for_an_unknown_user_is_refused(db):
    with pytest.raises(CommandError, match=r"^No user named 'ghost'\.$"):
        lepton_user("password", "ghost")

    assert not get_user_model().objects.exists()


# --- lepton_database_ready ------------------------------------------------------------------
@pytest.fixture
def postgres_server():
    """An autocommit connection to the PostgreSQL server of DATABASE_URL, and its URL parts."""
    import dj_database_url
    import psycopg2

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.skip(
            "Needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres"
        )
    parts = dj_database_url.parse(url)
    admin = psycopg2.connect(
        dbname="postgres",
        user=parts["USER"],
        password=parts["PASSWORD"] or None,
        host=parts["HOST"],
        port=parts["PORT"] or 5432,
    )
    admin.autocommit = True
    server = f"{parts['HOST']}:{parts['PORT'] or 5432}"
    created: list[str] = []
    yield admin, server, created
    with admin.cursor() as cursor:
        for statement in created:
            cursor.execute(statement)
    admin.close()


def database_exists(admin, name: str) -> bool:
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cursor.fetchone() is not None


def test_database_ready_creates_a_missing_database_when_the_account_may(tmp_path, postgres_server):
    admin, server, cleanup = postgres_server
    name = f"lepton_missing_{secrets.token_hex(4)}"
    cleanup.append(f'DROP DATABASE IF EXISTS "{name}"')

    result = manage(
        tmp_path, "lepton_database_ready", DATABASE_URL=f"postgres://postgres@{server}/{name}"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Created the database '{name}' on {server}."
    assert database_exists(admin, name)


def test_database_ready_says_in_one_line_what_to_create_when_the_account_may_not(
    tmp_path, postgres_server
):
    admin, server, cleanup = postgres_server
    role = f"lepton_nocreate_{secrets.token_hex(4)}"
    name = f"lepton_missing_{secrets.token_hex(4)}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    cleanup.append(f'DROP ROLE IF EXISTS "{role}"')

    result = manage(
        tmp_path, "lepton_database_ready", DATABASE_URL=f"postgres://{role}@{server}/{name}"
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"CommandError: The database '{name}' does not exist on {server}, and {role} may not "
        "create it (permission denied to create database). Create it with: createdb"
    )
    assert f"-O {role} {name}" in lines[0]
    assert not database_exists(admin, name)


def test_database_ready_is_silent_when_the_database_exists(tmp_path, postgres_server):
    result = manage(tmp_path, "lepton_database_ready", DATABASE_URL=os.environ["DATABASE_URL"])

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_database_ready_names_the_problem_when_the_server_is_down(tmp_path):
    result = manage(
        tmp_path, "lepton_database_ready", DATABASE_URL="postgres://postgres@127.0.0.1:1/console"
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "CommandError: Cannot connect to the database in DATABASE_URL ("
    )
    assert result.stderr.strip().endswith(
        "Check DATABASE_URL and that the database server is running."
    )


def test_an_instance_name_that_cannot_name_a_queue_refuses_to_start(tmp_path):
    result = manage_check_deploy(tmp_path, LEPTON_INSTANCE="lab one:2")

    assert result.returncode != 0
    assert (
        "LEPTON_INSTANCE names this console's queues: use up to 40 letters, digits, '-' or '_', "
        "not 'lab one:2'."
    ) in result.stderr


def test_the_instance_name_prefixes_the_queue_names(tmp_path):
    result = manage(
        tmp_path,
        "shell",
        "-c",
        "from lepton_web.celery import app; print(sorted(q.name for q in app.conf.task_queues))",
        LEPTON_INSTANCE="lab-b",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['lab-b.default', 'lab-b.gpu']"
