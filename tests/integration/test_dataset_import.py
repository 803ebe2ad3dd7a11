"""The import job end to end: a real worker on Redis imports the shared real datasets."""

import time

import pytest
from django.core.files import File

from datasets_app.models import Dataset, DatasetJob, Record
from datasets_app.services import dataset_import_start, dataset_upload
from tests.paths import SHARED_DATA

pytestmark = pytest.mark.integration

SHARED = SHARED_DATA
EXPECTED = {
    "sst2": (67349, {"negative": 29780, "positive": 37569}),
    "financial_phrasebank": (3869, {"negative": 483, "neutral": 2297, "positive": 1089}),
    "trec": (
        5452,
        {
            "abbreviation": 86,
            "description": 1162,
            "entity": 1250,
            "human": 1223,
            "location": 835,
            "numeric": 896,
        },
    ),
    # Per intent as listed in ../shared/data/README.md (the train split).
    "banking77": (
        10003,
        {
            "Refund_not_showing_up": 162,
            "activate_my_card": 159,
            "age_limit": 110,
            "apple_pay_or_google_pay": 126,
            "atm_support": 87,
            "automatic_top_up": 127,
            "balance_not_updated_after_bank_transfer": 171,
            "balance_not_updated_after_cheque_or_cash_deposit": 181,
            "beneficiary_not_allowed": 156,
            "cancel_transfer": 157,
            "card_about_to_expire": 129,
            "card_acceptance": 59,
            "card_arrival": 153,
            "card_delivery_estimate": 112,
            "card_linking": 139,
            "card_not_working": 112,
            "card_payment_fee_charged": 187,
            "card_payment_not_recognised": 168,
            "card_payment_wrong_exchange_rate": 167,
            "card_swallowed": 61,
            "cash_withdrawal_charge": 177,
            "cash_withdrawal_not_recognised": 160,
            "change_pin": 122,
            "compromised_card": 86,
            "contactless_not_working": 35,
            "country_support": 129,
            "declined_card_payment": 153,
            "declined_cash_withdrawal": 173,
            "declined_transfer": 133,
            "direct_debit_payment_not_recognised": 182,
            "disposable_card_limits": 121,
            "edit_personal_details": 121,
            "exchange_charge": 121,
            "exchange_rate": 112,
            "exchange_via_app": 118,
            "extra_charge_on_statement": 166,
            "failed_transfer": 137,
            "fiat_currency_support": 126,
            "get_disposable_virtual_card": 97,
            "get_physical_card": 106,
            "getting_spare_card": 129,
            "getting_virtual_card": 98,
            "lost_or_stolen_card": 82,
            "lost_or_stolen_phone": 121,
            "order_physical_card": 120,
            "passcode_forgotten": 105,
            "pending_card_payment": 159,
            "pending_cash_withdrawal": 143,
            "pending_top_up": 149,
            "pending_transfer": 148,
            "pin_blocked": 115,
            "receiving_money": 95,
            "request_refund": 169,
            "reverted_card_payment?": 161,
            "supported_cards_and_currencies": 129,
            "terminate_account": 108,
            "top_up_by_bank_transfer_charge": 111,
            "top_up_by_card_charge": 114,
            "top_up_by_cash_or_cheque": 114,
            "top_up_failed": 145,
            "top_up_limits": 97,
            "top_up_reverted": 146,
            "topping_up_by_card": 103,
            "transaction_charged_twice": 175,
            "transfer_fee_charged": 172,
            "transfer_into_account": 113,
            "transfer_not_received_by_recipient": 171,
            "transfer_timing": 128,
            "unable_to_verify_identity": 102,
            "verify_my_identity": 104,
            "verify_source_of_funds": 113,
            "verify_top_up": 126,
            "virtual_card_not_working": 41,
            "visa_or_mastercard": 135,
            "why_verify_identity": 121,
            "wrong_amount_of_cash_received": 180,
            "wrong_exchange_rate_for_cash_withdrawal": 163,
        },
    ),
}


def wait_for(job: DatasetJob, timeout: float = 120) -> DatasetJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"Import still {job.status} at {job.progress}%: {job.message}")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not on this machine")
def test_worker_imports_every_shared_dataset_with_exact_counts(redis_worker, make_user):
    redis_worker(queues="default")
    user = make_user("analyst")
    for name, (rows, labels) in EXPECTED.items():
        with (SHARED / name / "train.csv").open("rb") as handle:
            dataset = dataset_upload(user=user, file=File(handle, name="train.csv"), name=name)
        job = wait_for(
            dataset_import_start(
                dataset=dataset,
                user=user,
                mapping={"text_columns": ["text"], "label_column": "label"},
            )
        )

        assert job.status == "succeeded", job.error_message
        dataset.refresh_from_db()
        assert dataset.status == Dataset.Status.READY
        assert dataset.record_count == rows
        assert Record.objects.filter(import_run=job).count() == rows
        assert dataset.label_counts == labels
    report = DatasetJob.objects.filter(dataset__name="sst2", kind="report").first()
    assert report is not None
    wait_for(report)
    sst2 = Dataset.objects.get(name="sst2")
    findings = {f["kind"]: f["count"] for f in sst2.quality_report["findings"]}
    assert findings["exact_duplicate"] == 366
