"""Small things on the pages (issue 9, item 19, dataset side): a favicon, a way back from the
API docs, integer ticks on the text-length chart, thousands separators, and what "Review" on a
fully labeled dataset offers."""

from __future__ import annotations

from pytest_django.asserts import assertContains, assertNotContains


# --- favicon ----------------------------------------------------------------------------------
def test_favicon_is_served_without_login(client, db):
    response = client.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert b"".join(response.streaming_content).startswith(b"\x00\x00\x01\x00")  # ICO header


def test_every_page_links_the_favicon(client_as):
    response = client_as("viewer").get("/")

    assertContains(
        response, '<link rel="icon" href="/static/favicon.ico" sizes="16x16 32x32 48x48 64x64">'
    )


# --- API docs ---------------------------------------------------------------------------------
def test_api_docs_have_a_bar_back_to_the_console(client_as):
    response = client_as("viewer").get("/api/docs/")

    assertContains(response, '<a href="/">← Back to Lepton Console</a>', html=True)
    assertContains(response, '<div id="swagger-ui"></div>', html=True)  # the docs themselves


# --- Review on a fully labeled dataset -----------------------------------------------------------
def test_review_of_a_fully_labeled_dataset_says_so_and_what_next(client, analyst, redis_url):
    from tests.datasets_app.factories import imported_dataset

    dataset = imported_dataset(
        analyst,
        "text,label\nhello there,greeting\nbye now,farewell\n",
        {"text_columns": ["text"], "label_column": "label"},
    )
    client.force_login(analyst)

    listing = client.get("/datasets/labeling/")
    review = client.get(f"/datasets/{dataset.pk}/label/")

    assert listing.status_code == review.status_code == 200
    assertContains(
        listing,
        '<span class="small" data-testid="all-labeled">Every record has a label.</span>',
        html=True,
    )
    assertContains(
        listing,
        f'<a class="btn" href="/datasets/{dataset.pk}/records/?flag=included" '
        'data-testid="review-labels">Review labels</a>',
        html=True,
    )
    assertNotContains(listing, ">Review</a>")
    assertContains(review, "<h2>Every record has a label</h2>", html=True)
    assertContains(
        review,
        f'<a class="btn" href="/datasets/{dataset.pk}/records/?flag=included">Review the labels</a>',
        html=True,
    )
    assertContains(
        review,
        f'<a class="btn btn-primary" href="/datasets/{dataset.pk}/#splits">Splits and snapshots</a>',
        html=True,
    )


# --- counts on the Datasets page ------------------------------------------------------------------
def test_datasets_page_counts_labels_without_the_unlabeled_records(client, analyst, redis_url):
    from tests.datasets_app.factories import imported_dataset

    imported_dataset(
        analyst,
        "text,label\n" + "".join(f"text {n},{'a' if n % 2 else ''}\n" for n in range(1500)),
        {"text_columns": ["text"], "label_column": "label"},
        report=False,
    )
    client.force_login(analyst)

    response = client.get("/datasets/")

    assertContains(response, "<td>1,500</td>", html=True)  # records, with a separator
    assertContains(response, '<td data-testid="label-count">1</td>', html=True)  # not 2: '' is none
