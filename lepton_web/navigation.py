"""Which sidebar entry a page belongs to, so every page of a section lights up its entry (a
dataset's agreement page under Datasets, a version page under Models), not only the lists."""

from __future__ import annotations

# Pages reached from the Labeling page (its queue, settings, review queue, model in the loop).
LABELING_PAGES = {
    "labeling",
    "labeling_queue",
    "labeling_save",
    "labeling_settings",
    "labeling_assign",
    "review_queue",
    "review_decide",
    "model_loop",
}
DEPLOYMENT_PAGES = {
    "deployment_list",
    "deployment_action",
    "endpoint_playground",
    "prediction_token_create",
}
# Dataset pages that live in another app's URLs.
DATASET_PAGES = {"dataset_mislabeled", "dataset_mislabeled_start", "dataset_mislabeled_cancel"}
SECTIONS = {"datasets": "datasets", "training": "training", "models": "models"}


def nav_section(namespace: str, url_name: str) -> str:
    """The sidebar entry of a page: dashboard, datasets, labeling, training, models,
    deployments, or "" for pages outside them (login, API docs)."""
    if url_name in LABELING_PAGES:
        return "labeling"
    if url_name in DEPLOYMENT_PAGES:
        return "deployments"
    if url_name in DATASET_PAGES:
        return "datasets"
    if not namespace and url_name == "dashboard":
        return "dashboard"
    return SECTIONS.get(namespace, "")


def nav_context(request) -> dict:
    """Template context: ``nav_section`` for ``base.html``'s sidebar."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return {"nav_section": ""}
    return {"nav_section": nav_section(match.namespace or "", match.url_name or "")}
