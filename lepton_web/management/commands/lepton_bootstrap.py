import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from lepton_web.access import ADMIN
from lepton_web.accounts import roles_ensure, user_create
from models_app.services import base_model_register_bundled


class Command(BaseCommand):
    help = "Idempotent first-run set-up: roles, the bundled base model, the first admin account."

    def add_arguments(self, parser):
        parser.add_argument(
            "--admin-username", default=os.environ.get("LEPTON_ADMIN_USERNAME", "admin")
        )
        parser.add_argument("--url", default=os.environ.get("LEPTON_URL", "http://127.0.0.1:8000/"))

    def handle(self, *args, admin_username: str, url: str, **options):
        roles_ensure()
        base_model = base_model_register_bundled()
        self.stdout.write(f"Base model ready: {base_model.name} ({base_model.location})")

        if get_user_model().objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "An admin account already exists. Forgot its password? "
                f"Run: python manage.py lepton_user password {admin_username}"
            )
        else:
            _, password = user_create(username=admin_username, role=ADMIN)
            self.stdout.write(self.style.SUCCESS("Created the first admin account."))
            self.stdout.write(f"  username: {admin_username}")
            self.stdout.write(f"  password: {password}")
            self.stdout.write("  (shown only this once; store it now)")
        self.stdout.write(self.style.SUCCESS(f"Lepton Console: open {url}"))
