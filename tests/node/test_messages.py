"""The message models and the JSON schema files the scheduler team reads."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from accel.node.messages import SCHEMA_DIR, SCHEMA_MODELS, render_schema
from accel.schema import Job, ModelNotAvailableMessage


@pytest.mark.parametrize("stem", sorted(SCHEMA_MODELS))
def test_committed_schema_files_match_the_models(stem: str) -> None:
    path = SCHEMA_DIR / f"{stem}.schema.json"
    assert path.read_text(encoding="utf-8") == render_schema(SCHEMA_MODELS[stem]), (
        f"{path} is stale: run `python -m accel.node.messages`"
    )


def test_message_has_the_seed_fields_and_type() -> None:
    schema = json.loads((SCHEMA_DIR / "model_not_available.schema.json").read_text())
    for name in (
        "type",
        "job_id",
        "node_id",
        "model_id",
        "version",
        "reason",
        "progress",
        "timestamp",
    ):
        assert name in schema["properties"], name
    assert schema["properties"]["type"]["const"] == "MODEL_NOT_AVAILABLE"
    assert set(schema["properties"]["reason"]["enum"]) == {
        "not_installed",
        "queued",
        "downloading",
        "paused",
        "verifying",
        "error",
    }


def test_message_json_round_trip_and_timestamp_is_utc_iso() -> None:
    msg = ModelNotAvailableMessage(
        job_id="j1",
        node_id="n1",
        model_id="asr",
        version="1.0",
        reason="downloading",
        progress=0.25,
    )
    data = json.loads(msg.model_dump_json())
    assert data["type"] == "MODEL_NOT_AVAILABLE"
    assert data["timestamp"].endswith("Z")
    assert datetime.fromisoformat(data["timestamp"]).tzinfo is not None
    assert ModelNotAvailableMessage.model_validate(data) == msg


@pytest.mark.parametrize(
    "bad",
    [{"reason": "bogus"}, {"progress": 1.5}, {"progress": -0.1}, {"type": "OTHER"}],
)
def test_message_rejects_bad_values(bad: dict[str, object]) -> None:
    base: dict[str, object] = {
        "job_id": "j",
        "node_id": "n",
        "model_id": "m",
        "version": None,
        "reason": "queued",
        "progress": 0.0,
    }
    with pytest.raises(ValidationError):
        ModelNotAvailableMessage.model_validate({**base, **bad})


def test_job_requires_ids_and_version_is_optional() -> None:
    job = Job.model_validate({"job_id": "j", "required_model_id": "m"})
    assert job.required_model_version is None
    with pytest.raises(ValidationError):
        Job.model_validate({"job_id": "", "required_model_id": "m"})


@given(progress=st.floats(min_value=0, max_value=1), job=st.text(min_size=1))
def test_any_valid_message_survives_json(progress: float, job: str) -> None:
    msg = ModelNotAvailableMessage(
        job_id=job, node_id="n", model_id="m", version="v", reason="paused", progress=progress
    )
    assert ModelNotAvailableMessage.model_validate_json(msg.model_dump_json()) == msg
