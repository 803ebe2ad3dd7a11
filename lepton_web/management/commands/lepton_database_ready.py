"""Make sure the database DATABASE_URL names exists before anything migrates it.

scripts/run.sh calls this first, so a mistyped or not-yet-created database gets one sentence
saying what to create (or is created, when the account may do so) instead of a traceback.
"""

import re

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections

_MISSING_DATABASE = re.compile(r'database "(?P<name>[^"]+)" does not exist')


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].removeprefix("FATAL:").strip()


class Command(BaseCommand):
    help = (
        "Check that the database in DATABASE_URL can be reached and exists; create a missing "
        "PostgreSQL database when the account is allowed to."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-create",
            action="store_true",
            help="Only say what to create; never create a database.",
        )

    def handle(self, *args, no_create: bool = False, **options):
        connection = connections["default"]
        settings_dict = connection.settings_dict
        name = str(settings_dict["NAME"])
        where = f"{settings_dict.get('HOST') or 'localhost'}:{settings_dict.get('PORT') or 5432}"
        user = settings_dict.get("USER") or "the configured user"
        try:
            connection.ensure_connection()
        except DatabaseError as exc:
            missing = _MISSING_DATABASE.search(str(exc))
            if connection.vendor != "postgresql" or not missing:
                raise CommandError(
                    f"Cannot connect to the database in DATABASE_URL ({_first_line(exc)}). "
                    "Check DATABASE_URL and that the database server is running."
                ) from None
        else:
            connection.close()
            return

        create_hint = (
            f"Create it with: createdb -h {settings_dict.get('HOST') or 'localhost'} "
            f"-p {settings_dict.get('PORT') or 5432} -U <a user allowed to create databases> "
            f'-O {user} {name}   (or in psql: CREATE DATABASE "{name}" OWNER "{user}";), '
            "then start again."
        )
        if no_create:
            raise CommandError(f"The database {name!r} does not exist on {where}. {create_hint}")
        try:
            # The server's maintenance database, as Django's test runner uses to create its own.
            with connection._nodb_cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {connection.ops.quote_name(name)}")
        except DatabaseError as exc:
            raise CommandError(
                f"The database {name!r} does not exist on {where}, and {user} may not create it "
                f"({_first_line(exc)}). {create_hint}"
            ) from None
        self.stdout.write(f"Created the database {name!r} on {where}.")
