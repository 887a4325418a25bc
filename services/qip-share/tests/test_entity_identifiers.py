"""An entity's identifiers are checked by their name (issue 12 §5): an `npi` carries its check digit, identifiers
are bounded in number and length. POST /entities answers 422 naming the field."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from dsi_shared.http import Auth, install_problem_handlers
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from qip_share.api import EntityForm, routes

ENTITY = {"kind": "DPH", "name": "County Medical Center", "identifiers": {"npi": "1992753883"},
          "address": "3 County Rd, Fresno CA", "endpoint": "sftp://county.example/in"}


@pytest.mark.parametrize("identifiers", [{"npi": "0000000000"}, {"NPI": "1992753880"}, {"npi": "199275388"},
                                         {"oshpd": "1" * 201}, {"k" * 51: "1"}, {f"id{i}": "1" for i in range(21)}])
def test_entity_identifiers_are_checked(identifiers: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as raised:
        EntityForm.model_validate({**ENTITY, "identifiers": identifiers})
    assert all(e["loc"][0] == "identifiers" for e in raised.value.errors())
    partner = {"name": "Partner Clinic", "identifiers": identifiers, "address": "1 Main St, Fresno CA",
               "endpoint": "sftp://partner.example"}
    with pytest.raises(ValidationError):
        EntityForm.model_validate({**ENTITY, "kind": "DMPH", "community_partners": [partner]})


def test_valid_identifiers_are_accepted() -> None:
    form = EntityForm.model_validate({**ENTITY, "identifiers": {"npi": "1992753883", "oshpd": "106440755"}})
    assert form.identifiers == {"npi": "1992753883", "oshpd": "106440755"}


def test_post_entities_with_an_invalid_npi_is_422_and_records_nothing(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    from qip_share.application import QipShare

    monkeypatch.setenv("DSI_PAYLOAD_KEY", base64.b64encode(os.urandom(32)).decode())
    app = QipShare(f"sqlite:///{tmp_path / 'qip.db'}")
    http = FastAPI()
    install_problem_handlers(http)
    http.include_router(routes(app, Auth({"staff": "program-staff"})))
    with TestClient(http, raise_server_exceptions=False) as client:
        body: dict[str, Any] = {**ENTITY, "identifiers": {"npi": "0000000000"}}
        response = client.post("/entities", json=body, headers={"Authorization": "Bearer staff"})
        assert response.status_code == 422, response.text
        assert [tuple(e["loc"]) for e in response.json()["errors"]] == [("body", "identifiers")]
        assert "0000000000" not in response.text
        assert client.get("/entities", headers={"Authorization": "Bearer staff"}).json()["count"] == 0
    app.close()
