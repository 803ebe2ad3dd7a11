from django.apps import AppConfig


class LeptonWebConfig(AppConfig):
    name = "lepton_web"
    verbose_name = "Console"
