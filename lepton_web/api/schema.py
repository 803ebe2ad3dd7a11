from drf_spectacular.openapi import AutoSchema


class ConsoleAutoSchema(AutoSchema):
    """Name nested serializers after their view (``DatasetSplitApi.InputSerializer`` becomes
    ``DatasetSplitApiInput``), so the house style of one InputSerializer per view yields
    distinct OpenAPI components."""

    def _get_serializer_name(self, serializer, direction, bypass_extensions=False) -> str:
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        qualname = type(serializer).__qualname__
        if "." in qualname:
            outer = qualname.split(".")[0]
            if not name.startswith(outer):
                name = f"{outer}{name}"
        return name
