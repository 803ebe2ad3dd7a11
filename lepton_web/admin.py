from django.contrib import admin
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from lepton_web.models import WorkerCheck, WorkerPresence


@admin.register(WorkerPresence)
class WorkerPresenceAdmin(admin.ModelAdmin):
    list_display = ["hostname", "queues", "last_seen_at", "stopped_at"]


@admin.register(WorkerCheck)
class WorkerCheckAdmin(admin.ModelAdmin):
    list_display = ["id", "queue", "status", "progress", "worker_hostname", "created_at"]
    list_filter = ["status", "queue"]


# Users' API tokens are stored as digests (lepton_web.accounts): the stock admin would show the
# digest as a "key" and add tokens whose key was never given to anyone. Here an admin sees who
# has a token and since when, and can revoke it; `manage.py lepton_user token NAME` issues one.
admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class HashedTokenAdmin(TokenAdmin):
    list_display = ("user", "created")
    fields = ("user", "created")
    readonly_fields = ("user", "created")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
