from django.urls import path

from models_app.api import views

urlpatterns = [
    path("base-models/", views.BaseModelListApi.as_view(), name="api_base_models"),
]
