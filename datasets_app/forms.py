from django import forms

from datasets_app.services.cleaning import FIXES

ENCODINGS = [
    ("", "Detect automatically"),
    ("utf-8", "UTF-8"),
    ("utf-8-sig", "UTF-8 with BOM"),
    ("utf-16", "UTF-16"),
    ("cp1252", "Windows-1252 / Latin-1 (Excel)"),
    ("gb18030", "GB18030 / GBK (Chinese, simplified)"),
    ("big5hkscs", "Big5 (Chinese, traditional)"),
    ("cp932", "Shift-JIS (Japanese)"),
]
DELIMITERS = [
    ("", "Detect automatically"),
    (",", "Comma ,"),
    (";", "Semicolon ;"),
    ("\t", "Tab"),
    ("|", "Pipe |"),
]
HEADERS = [("", "Detect automatically"), ("yes", "First row is a header"), ("no", "No header row")]


class UploadForm(forms.Form):
    # Empty files reach the service, which explains what is wrong with them.
    file = forms.FileField(allow_empty_file=True)
    name = forms.CharField(max_length=200, required=False)


class DetectForm(forms.Form):
    encoding = forms.ChoiceField(choices=ENCODINGS, required=False)
    delimiter = forms.ChoiceField(choices=DELIMITERS, required=False)
    header = forms.ChoiceField(choices=HEADERS, required=False)

    def overrides(self) -> dict:
        header = self.cleaned_data.get("header")
        return {
            "encoding": self.cleaned_data.get("encoding") or None,
            "delimiter": self.cleaned_data.get("delimiter") or None,
            "has_header": {"yes": True, "no": False}.get(header),
        }


class MappingForm(forms.Form):
    text_columns = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple, label="Text column(s)"
    )
    text_separator = forms.CharField(
        required=False,
        initial="\\n",
        strip=False,
        label="Join several text columns with",
        help_text="\\n means a new line.",
    )
    label_column = forms.ChoiceField(required=False, label="Label column")
    split_column = forms.ChoiceField(required=False, label="Split column")
    id_column = forms.ChoiceField(required=False, label="Id column")

    def __init__(self, *args, columns: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(c, c) for c in columns]
        optional = [("", "— none —"), *choices]
        self.fields["text_columns"].choices = choices
        for name in ("label_column", "split_column", "id_column"):
            self.fields[name].choices = optional

    def mapping(self) -> dict:
        data = self.cleaned_data
        return {
            "text_columns": data["text_columns"],
            "text_separator": (data.get("text_separator") or "\\n")
            .replace("\\n", "\n")
            .replace("\\t", "\t"),
            "label_column": data.get("label_column") or None,
            "split_column": data.get("split_column") or None,
            "id_column": data.get("id_column") or None,
        }


class CleanForm(forms.Form):
    kind = forms.ChoiceField(choices=list(FIXES.items()))


class SplitForm(forms.Form):
    mode = forms.ChoiceField(
        choices=[("random", "Stratified random split"), ("file", "Use the file's split column")]
    )
    train_percent = forms.IntegerField(min_value=1, max_value=100, initial=80)
    validation_percent = forms.IntegerField(min_value=0, max_value=99, initial=10)
    test_percent = forms.IntegerField(min_value=0, max_value=99, initial=10)
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=13)

    def clean(self):
        data = super().clean()
        parts = [data.get(k) for k in ("train_percent", "validation_percent", "test_percent")]
        if all(p is not None for p in parts) and sum(parts) != 100:
            raise forms.ValidationError(
                f"The three percentages must add up to 100; they add up to {sum(parts)}."
            )
        return data

    def ratios(self) -> tuple[float, float, float]:
        d = self.cleaned_data
        return (d["train_percent"] / 100, d["validation_percent"] / 100, d["test_percent"] / 100)


class SnapshotForm(forms.Form):
    note = forms.CharField(max_length=300, required=False)
