from django.contrib import admin

from models_app.models import BaseModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "architecture", "parameter_count", "is_default"]
