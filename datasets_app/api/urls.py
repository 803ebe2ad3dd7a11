from django.urls import path

from datasets_app.api import agreement, labeling, review, views

urlpatterns = [
    path("datasets/", views.DatasetListApi.as_view(), name="api_datasets"),
    path("datasets/demo/", views.DemoDatasetApi.as_view(), name="api_dataset_demo"),
    path("datasets/<id:dataset_id>/", views.DatasetDetailApi.as_view(), name="api_dataset"),
    path(
        "datasets/<id:dataset_id>/detect/",
        views.DatasetDetectApi.as_view(),
        name="api_dataset_detect",
    ),
    path(
        "datasets/<id:dataset_id>/import/",
        views.DatasetImportApi.as_view(),
        name="api_dataset_import",
    ),
    path(
        "datasets/<id:dataset_id>/import/cancel/",
        views.DatasetImportCancelApi.as_view(),
        name="api_dataset_import_cancel",
    ),
    path(
        "datasets/<id:dataset_id>/records/",
        views.RecordListApi.as_view(),
        name="api_dataset_records",
    ),
    path(
        "datasets/<id:dataset_id>/clean/", views.DatasetCleanApi.as_view(), name="api_dataset_clean"
    ),
    path(
        "datasets/<id:dataset_id>/clean/undo/",
        views.DatasetCleanUndoApi.as_view(),
        name="api_dataset_clean_undo",
    ),
    path(
        "datasets/<id:dataset_id>/split/", views.DatasetSplitApi.as_view(), name="api_dataset_split"
    ),
    path(
        "datasets/<id:dataset_id>/snapshots/",
        views.SnapshotListApi.as_view(),
        name="api_dataset_snapshots",
    ),
    path(
        "datasets/<id:dataset_id>/export/",
        views.DatasetExportApi.as_view(),
        name="api_dataset_export",
    ),
    path("snapshots/<id:snapshot_id>/", views.SnapshotDetailApi.as_view(), name="api_snapshot"),
    path(
        "datasets/<id:dataset_id>/label-schema/",
        labeling.LabelSchemaApi.as_view(),
        name="api_dataset_label_schema",
    ),
    path(
        "datasets/<id:dataset_id>/labeling/next/",
        labeling.LabelingNextApi.as_view(),
        name="api_dataset_labeling_next",
    ),
    path(
        "datasets/<id:dataset_id>/labeling/undo/",
        labeling.LabelingUndoApi.as_view(),
        name="api_dataset_labeling_undo",
    ),
    path(
        "datasets/<id:dataset_id>/records/label/",
        labeling.RecordsLabelBulkApi.as_view(),
        name="api_records_label_bulk",
    ),
    path(
        "datasets/<id:dataset_id>/bulk-labels/<id:bulk_label_id>/undo/",
        labeling.BulkLabelUndoApi.as_view(),
        name="api_bulk_label_undo",
    ),
    path(
        "datasets/<id:dataset_id>/records/<id:record_id>/label/",
        labeling.RecordLabelApi.as_view(),
        name="api_record_label",
    ),
    path(
        "datasets/<id:dataset_id>/labeling/settings/",
        review.LabelingSettingsApi.as_view(),
        name="api_dataset_labeling_settings",
    ),
    path(
        "datasets/<id:dataset_id>/annotators/",
        review.DatasetAnnotatorsApi.as_view(),
        name="api_dataset_annotators",
    ),
    path(
        "datasets/<id:dataset_id>/annotators/<id:user_id>/",
        review.DatasetAnnotatorApi.as_view(),
        name="api_dataset_annotator",
    ),
    path(
        "datasets/<id:dataset_id>/review/",
        review.ReviewItemsApi.as_view(),
        name="api_dataset_review",
    ),
    path(
        "datasets/<id:dataset_id>/review/<id:item_id>/",
        review.ReviewDecisionApi.as_view(),
        name="api_dataset_review_decision",
    ),
    path(
        "datasets/<id:dataset_id>/agreement/",
        agreement.DatasetAgreementApi.as_view(),
        name="api_dataset_agreement",
    ),
]
