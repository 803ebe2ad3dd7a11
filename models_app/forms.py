from django import forms


class BaseModelForm(forms.Form):
    name = forms.CharField(max_length=200)
    source = forms.ChoiceField(
        choices=[
            ("local", "Folder on the server"),
            ("hub", "Hugging Face Hub id"),
            ("upload", "Upload a zipped model folder"),
        ]
    )
    location = forms.CharField(
        max_length=500, required=False, help_text="Folder path or hub id (not for uploads)."
    )
    file = forms.FileField(required=False, help_text="A .zip of a Hugging Face model folder.")


RUNTIME_CHOICES = [
    ("", "Fastest that passed parity"),
    ("onnx-int8", "ONNX int8"),
    ("onnx-fp32", "ONNX fp32"),
    ("pytorch", "PyTorch"),
]


class DeployForm(forms.Form):
    slug = forms.SlugField(
        max_length=60, label="Endpoint", help_text="An existing endpoint's name, or a new one."
    )
    runtime = forms.ChoiceField(choices=RUNTIME_CHOICES, required=False)
    follow_alias = forms.SlugField(
        max_length=60, required=False, help_text="Redeploy whenever this alias moves (optional)."
    )


class AliasForm(forms.Form):
    name = forms.SlugField(max_length=60, help_text="e.g. production or staging")


class PromoteForm(forms.Form):
    version = forms.IntegerField(min_value=1, max_value=2**31 - 1)
    runtime = forms.ChoiceField(choices=RUNTIME_CHOICES, required=False)


class PredictionTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="The application that will use it.")
    endpoints = forms.MultipleChoiceField(choices=[], widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args, slugs: list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["endpoints"].choices = [(slug, slug) for slug in slugs]
