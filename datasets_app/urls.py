from django.urls import path

from datasets_app import views, views_agreement, views_review

app_name = "datasets"
urlpatterns = [
    path("", views.dataset_list, name="dataset_list"),
    path("upload/", views.dataset_upload, name="dataset_upload"),
    path("demo/", views.dataset_demo, name="dataset_demo"),
    path("labeling/", views.labeling, name="labeling"),
    path("<id:dataset_id>/", views.dataset_detail, name="dataset_detail"),
    path("<id:dataset_id>/detect/", views.dataset_detect, name="dataset_detect"),
    path("<id:dataset_id>/import/", views.dataset_import, name="dataset_import"),
    path(
        "<id:dataset_id>/import/cancel/", views.dataset_import_cancel, name="dataset_import_cancel"
    ),
    path("<id:dataset_id>/clean/", views.dataset_clean, name="dataset_clean"),
    path("<id:dataset_id>/clean/undo/", views.dataset_clean_undo, name="dataset_clean_undo"),
    path("<id:dataset_id>/split/", views.dataset_split, name="dataset_split"),
    path("<id:dataset_id>/snapshots/", views.snapshot_create, name="snapshot_create"),
    path("<id:dataset_id>/delete/", views.dataset_delete, name="dataset_delete"),
    path("<id:dataset_id>/records/", views.dataset_records, name="dataset_records"),
    path("<id:dataset_id>/records/label/", views.records_label_bulk, name="records_label_bulk"),
    path(
        "<id:dataset_id>/records/label/<id:bulk_label_id>/undo/",
        views.records_label_bulk_undo,
        name="records_label_bulk_undo",
    ),
    path("<id:dataset_id>/export/", views.dataset_export, name="dataset_export"),
    path("<id:dataset_id>/label/", views.labeling_queue, name="labeling_queue"),
    path("<id:dataset_id>/label/<id:record_id>/", views.labeling_save, name="labeling_save"),
    path("<id:dataset_id>/label/next/", views.labeling_next_json, name="labeling_next_json"),
    path("<id:dataset_id>/label/submit/", views.labeling_submit_json, name="labeling_submit_json"),
    path("<id:dataset_id>/label/undo/", views.labeling_undo_json, name="labeling_undo_json"),
    path("<id:dataset_id>/labels/", views.label_schema_edit, name="label_schema_edit"),
    path(
        "<id:dataset_id>/labeling/settings/",
        views_review.labeling_settings,
        name="labeling_settings",
    ),
    path(
        "<id:dataset_id>/labeling/annotators/",
        views_review.labeling_assign,
        name="labeling_assign",
    ),
    path("<id:dataset_id>/review/", views_review.review_queue, name="review_queue"),
    path(
        "<id:dataset_id>/review/<id:item_id>/",
        views_review.review_decide,
        name="review_decide",
    ),
    path(
        "<id:dataset_id>/agreement/",
        views_agreement.dataset_agreement,
        name="dataset_agreement",
    ),
    path(
        "<id:dataset_id>/agreement/count/",
        views_agreement.dataset_agreement_count,
        name="dataset_agreement_count",
    ),
]
