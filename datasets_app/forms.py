from django import forms

from datasets_app.services.cleaning import FIXES
from datasets_app.services.snapshots import dataset_file_split_column

# Suggestions for the encoding field, which takes any encoding Python knows by name.
ENCODINGS = [
    ("utf-8", "UTF-8"),
    ("utf-8-sig", "UTF-8 with BOM"),
    ("utf-16", "UTF-16"),
    ("cp1252", "Windows-1252 / Latin-1 (Excel)"),
    ("gb18030", "GB18030 / GBK (Chinese, simplified)"),
    ("big5hkscs", "Big5 (Chinese, traditional)"),
    ("cp932", "Shift-JIS (Japanese)"),
    ("latin-1", "ISO-8859-1 / Latin-1"),
    ("cp1250", "Windows-1250 (Central European)"),
    ("utf-16-le", "UTF-16 little-endian without BOM"),
]


def encoding_name(codec: str) -> str:
    """A codec as people name it ("UTF-8", "Windows-1252 / Latin-1 (Excel)"); one not in the
    list keeps its codec name."""
    import codecs

    def key(name: str) -> str:
        try:
            return codecs.lookup(name).name
        except LookupError:
            return name

    names = {key(value): label for value, label in ENCODINGS}
    return names.get(key(codec), codec) if codec else ""


DELIMITERS = [
    ("", "Detect automatically"),
    (",", "Comma ,"),
    (";", "Semicolon ;"),
    ("\t", "Tab"),
    ("|", "Pipe |"),
]
HEADERS = [("", "Detect automatically"), ("yes", "First row is a header"), ("no", "No header row")]
QUOTINGS = [
    ("", "Detect automatically"),
    ("double", 'Double quotes "'),
    ("single", "Single quotes '"),
    ("none", "No quoting"),
]
# How several text columns are joined. "\\n" is what the page always sent for a new line.
SEPARATORS = [
    ("\\n", "A new line"),
    ("space", "A space"),
    ("pipe", "Space, bar, space ( | )"),
    ("tab", "A tab"),
    ("none", "Nothing: run them together"),
    ("custom", "Other text (type it below)"),
]
SEPARATOR_TEXT = {"\\n": "\n", "space": " ", "pipe": " | ", "tab": "\t", "none": ""}


class UploadForm(forms.Form):
    # Empty files reach the service, which explains what is wrong with them.
    file = forms.FileField(allow_empty_file=True)
    name = forms.CharField(max_length=200, required=False)


class DetectForm(forms.Form):
    """The user's overrides; their values are checked by the service (csv_io.override_errors),
    whose errors the view puts next to these fields (same names)."""

    encoding = forms.CharField(
        required=False,
        max_length=40,
        widget=forms.TextInput(
            attrs={
                "list": "encoding-choices",
                "placeholder": "Detect automatically",
                "autocomplete": "off",
            }
        ),
    )
    delimiter = forms.ChoiceField(choices=DELIMITERS, required=False)
    quoting = forms.ChoiceField(choices=QUOTINGS, required=False)
    header = forms.ChoiceField(choices=HEADERS, required=False)
    encoding_choices = ENCODINGS

    def overrides(self) -> dict:
        header = self.cleaned_data.get("header")
        return {
            "encoding": self.cleaned_data.get("encoding") or None,
            "delimiter": self.cleaned_data.get("delimiter") or None,
            "quoting": self.cleaned_data.get("quoting") or None,
            "has_header": {"yes": True, "no": False}.get(header),
        }


class MappingForm(forms.Form):
    text_columns = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple, label="Text column(s)"
    )
    text_separator = forms.ChoiceField(
        choices=SEPARATORS,
        required=False,
        initial="\\n",
        label="Join several text columns with",
    )
    text_separator_custom = forms.CharField(
        required=False,
        strip=False,
        max_length=50,
        label="Other text to join them with",
        help_text="Used when “Other text” is chosen above; \\n means a new line, \\t a tab.",
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

    def clean(self):
        data = super().clean()
        if data.get("text_separator") == "custom" and not data.get("text_separator_custom"):
            self.add_error(
                "text_separator_custom",
                "Type the text to put between the text columns, or choose “Nothing” above.",
            )
        return data

    def separator(self) -> str:
        choice = self.cleaned_data.get("text_separator") or "\\n"  # not sent: a new line
        if choice == "custom":
            custom = self.cleaned_data["text_separator_custom"]
            return custom.replace("\\n", "\n").replace("\\t", "\t")
        return SEPARATOR_TEXT[choice]

    def mapping(self) -> dict:
        data = self.cleaned_data
        return {
            "text_columns": data["text_columns"],
            "text_separator": self.separator(),
            "label_column": data.get("label_column") or None,
            "split_column": data.get("split_column") or None,
            "id_column": data.get("id_column") or None,
        }


def separator_initial(separator: str | None) -> dict:
    """The mapping form's separator fields for a stored separator (None: the default)."""
    if separator is None:
        separator = "\n"
    for choice, text in SEPARATOR_TEXT.items():
        if separator == text:
            return {"text_separator": choice, "text_separator_custom": ""}
    escaped = separator.replace("\n", "\\n").replace("\t", "\\t")
    return {"text_separator": "custom", "text_separator_custom": escaped}


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

    def __init__(self, *args, dataset=None, **kwargs):
        super().__init__(*args, **kwargs)
        if dataset is not None and "mode" not in self.initial:
            self.initial["mode"] = split_mode_initial(dataset)

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


def split_mode_initial(dataset) -> str:
    """'file' when the import whose records are active mapped a split column, unless the latest
    report found those splits leaking texts into later splits: then a random split, which keeps
    near-duplicates together, is the one to propose."""
    findings = (dataset.quality_report or {}).get("findings", [])
    leaking = any(finding.get("kind") == "split_leakage" for finding in findings)
    return "file" if dataset_file_split_column(dataset) and not leaking else "random"


class SnapshotForm(forms.Form):
    note = forms.CharField(max_length=300, required=False)
