"""The sidebar lights up the section of every page, not only its list (a dataset's agreement
page under Datasets, a version under Models, the review queue under Labeling)."""

import re

import pytest
from django.urls import reverse

from lepton_web.navigation import nav_section
from tests.datasets_app.factories import imported_dataset

pytestmark = pytest.mark.usefixtures("redis_url")


@pytest.mark.parametrize(
    ("namespace", "url_name", "section"),
    [
        ("", "dashboard", "dashboard"),
        ("datasets", "dataset_list", "datasets"),
        ("datasets", "dataset_detail", "datasets"),
        ("datasets", "dataset_agreement", "datasets"),
        ("models", "dataset_mislabeled", "datasets"),
        ("datasets", "labeling", "labeling"),
        ("datasets", "review_queue", "labeling"),
        ("datasets", "labeling_settings", "labeling"),
        ("training", "model_loop", "labeling"),
        ("training", "run_detail", "training"),
        ("models", "version_detail", "models"),
        ("models", "model_aliases", "models"),
        ("models", "deployment_list", "deployments"),
        ("models", "endpoint_playground", "deployments"),
        ("", "login", ""),
    ],
)
def test_each_page_belongs_to_one_sidebar_entry(namespace, url_name, section):
    assert nav_section(namespace, url_name) == section


def active_entries(html: str) -> list[str]:
    nav = html[html.index('data-testid="nav"') : html.index("</nav>")]
    return re.findall(r'class="active">([^<]+)</a>', nav)


def test_dataset_subpages_light_up_their_section_and_show_the_path(client, analyst):
    dataset = imported_dataset(
        analyst,
        "text,label\nhello,\n",
        {"text_columns": ["text"], "label_column": "label"},
        report=False,
    )
    client.force_login(analyst)
    crumbs = {
        "datasets:dataset_agreement": ("Datasets", "datasets:dataset_list", "Agreement"),
        "models:dataset_mislabeled": ("Datasets", "datasets:dataset_list", "Likely mislabeled"),
        "datasets:review_queue": ("Labeling", "datasets:labeling", "Review queue"),
        "datasets:labeling_settings": ("Labeling", "datasets:labeling", "Settings"),
        "training:model_loop": ("Labeling", "datasets:labeling", "Model in the loop"),
    }
    for url_name, (section, section_url, page_name) in crumbs.items():
        html = client.get(reverse(url_name, args=[dataset.pk])).content.decode()
        assert active_entries(html) == [section], url_name
        title = html[html.index('<h1 class="page-title">') : html.index("</h1>")]
        assert f'href="{reverse(section_url)}"' in title, url_name
        assert f'href="{reverse("datasets:dataset_detail", args=[dataset.pk])}"' in title
        assert title.endswith(f"/ {page_name}"), (url_name, title)
