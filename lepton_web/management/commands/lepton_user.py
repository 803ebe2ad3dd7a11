from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from lepton_web.access import ROLES
from lepton_web.accounts import user_create, user_password_reset, user_token_rotate


class Command(BaseCommand):
    help = "Create users, reset passwords and issue API tokens."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a user with a role and a random password.")
        create.add_argument("username")
        create.add_argument("--role", choices=ROLES, required=True)
        create.add_argument("--email", default="")
        create.add_argument("--token", action="store_true", help="Also print an API token.")
        token = sub.add_parser(
            "token",
            help="Issue a new API token and print it; the user's previous token stops working "
            "(tokens are stored hashed, so none can be shown again).",
        )
        token.add_argument("username")
        password = sub.add_parser("password", help="Set a new random password and print it.")
        password.add_argument("username")

    def handle(self, *args, action: str, username: str, **options):
        try:
            if action == "create":
                user, password = user_create(
                    username=username, role=options["role"], email=options["email"]
                )
                self.stdout.write(f"Created {user.username} ({options['role']}).")
                self.stdout.write(f"password: {password}")
                if options["token"]:
                    self.stdout.write(f"token: {user_token_rotate(username=username)}")
            elif action == "token":
                self.stdout.write(user_token_rotate(username=username))
            elif action == "password":
                self.stdout.write(f"password: {user_password_reset(username=username)}")
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
