"""One real server (launch.py --api, the tiny model beside the demo model) shared by the test
files that replay HTTP clients against it: starting it costs seconds, and those tests pick
their model per request or per test, so none needs a fresh one."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.servers import data_dir_with_tiny_model, launched


@pytest.fixture(scope="package")
def api_server(tmp_path_factory, tiny_checkpoint):
    """(base URL, data folder) of the shared server, once its first model has loaded."""
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("api-server"), tiny_checkpoint)
    with launched(data, "--api", "--disable-console-progressbars", ready_path="/sdapi/v1/sd-models") as url:
        deadline = time.monotonic() + 60
        while httpx.get(url + "/sdapi/v1/options").json().get("sd_model_checkpoint") is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the first model loads in the background
        yield url, data
