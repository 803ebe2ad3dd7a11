from django.urls import path

from models_app import views

app_name = "models"
urlpatterns = [
    path("", views.model_list, name="model_list"),
    path("deployments/", views.deployment_list, name="deployment_list"),
]
