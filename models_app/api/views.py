from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from lepton_web.access import RolePermission
from models_app.models import BaseModel
from models_app.selectors import base_model_list_for_user


class BaseModelOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = BaseModel
        fields = [
            "id",
            "name",
            "source",
            "location",
            "architecture",
            "parameter_count",
            "description",
            "licence",
            "is_default",
        ]


class BaseModelListApi(APIView):
    """The base-model catalogue that training runs start from."""

    access_resource = "base_model"
    permission_classes = [RolePermission]

    @extend_schema(responses={200: BaseModelOutputSerializer(many=True)})
    def get(self, request):
        base_models = base_model_list_for_user(user=request.user)
        return Response(BaseModelOutputSerializer(base_models, many=True).data)
