"""An enrollment application on a scratch SQLite store, and its HTTP API in-process (no NATS needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dsi_shared.http import Auth, install_problem_handlers
from enrollment.api import routes
from enrollment.application import Enrollment
from fastapi import FastAPI
from fastapi.testclient import TestClient

STAFF = {"Authorization": "Bearer staff"}
FORM = {
    "legal_name": "Sunrise Skilled Nursing, Inc.", "npi": "1234567893", "tin": "941234567",
    "provider_type": "skilled_nursing", "counties": ["Monterey"], "ehr_product": "PointClickCare",
    "is_hospital": False, "umbrella_group": None, "manages_ehr": True, "sending_facilities": ["SUNRISE"],
    "contact_email": "dsi@sunrise.example", "submitted_on": "2024-03-01",
}


@pytest.fixture
def enrollment_app(tmp_path: Path) -> Iterator[Enrollment]:
    app = Enrollment(f"sqlite:///{tmp_path / 'enrollment.db'}")
    app.ensure_default_rules()
    yield app
    app.close()


@pytest.fixture
def api(enrollment_app: Enrollment) -> Iterator[TestClient]:
    http = FastAPI()
    install_problem_handlers(http)
    http.include_router(routes(enrollment_app, Auth({"staff": "program-staff", "auditor-token": "auditor"})))
    with TestClient(http, raise_server_exceptions=False) as client:
        yield client
