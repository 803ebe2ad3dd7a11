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
