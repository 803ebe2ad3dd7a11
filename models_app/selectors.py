from django.db.models import QuerySet

from lepton_web.access import access_check
from models_app.models import BaseModel


def base_model_list_for_user(*, user) -> QuerySet[BaseModel]:
    access_check(user, "base_model", "view")
    return BaseModel.objects.all()
