from django.contrib import admin

from lepton_web.models import WorkerCheck, WorkerPresence


@admin.register(WorkerPresence)
class WorkerPresenceAdmin(admin.ModelAdmin):
    list_display = ["hostname", "queues", "last_seen_at", "stopped_at"]


@admin.register(WorkerCheck)
class WorkerCheckAdmin(admin.ModelAdmin):
    list_display = ["id", "queue", "status", "progress", "worker_hostname", "created_at"]
    list_filter = ["status", "queue"]
