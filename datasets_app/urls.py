from django.urls import path

from datasets_app import views

app_name = "datasets"
urlpatterns = [
    path("", views.dataset_list, name="dataset_list"),
    path("labeling/", views.labeling, name="labeling"),
]
