"""`GET /v1/models`, the page at `/` and the offline docs assets, on an app without workers (nothing runs)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from wanserve.api.app import create_app
from wanserve.config import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = tmp_path_factory.mktemp("models")
    settings = Settings(data_dir=data, models=["tiny-t2v", "tiny-t2v-moe", "tiny-flf2v", "tiny-vace", "tiny-animate"])
    with TestClient(create_app(settings, start_workers=False)) as client:
        yield client


def by_id(client) -> dict[str, dict]:
    response = client.get("/v1/models")
    assert response.status_code == 200, response.text
    return {model["id"]: model for model in response.json()["data"]}


def params_of(task: dict) -> dict[str, dict]:
    return {p["name"]: p for p in task["parameters"]}


def test_list_models_served_in_order_first_is_default(client):
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["tiny-t2v", "tiny-t2v-moe", "tiny-flf2v", "tiny-vace", "tiny-animate"]
    assert [m["default"] for m in data] == [True, False, False, False, False]
    assert all(m["random_weights"] and m["object"] == "model" for m in data)


def test_list_models_sizes_frames_and_defaults_from_the_spec(client):
    model = by_id(client)["tiny-t2v"]
    assert model["sizes"] == [{"width": 64, "height": 64}, {"width": 96, "height": 64}, {"width": 64, "height": 96}]
    assert (model["size_multiple"], model["max_side"], model["frames_multiple"], model["max_frames"]) == (
        16,
        256,
        4,
        33,
    )
    assert model["default_task"] == "t2v" and [t["task"] for t in model["tasks"]] == ["t2v", "v2v", "t2i"]
    t2i = model["tasks"][2]
    assert t2i["output"] == "image" and params_of(t2i)["num_frames"]["default"] == 1
    assert "fps" not in params_of(t2i) and "crf" not in params_of(t2i)
    t2v = params_of(model["tasks"][0])
    steps = t2v["num_inference_steps"]
    assert (steps["type"], steps["default"], steps["choices"]) == ("integer", 2, None)
    assert steps["description"].startswith("Denoising steps")  # the parameter table's help text
    # tiny-t2v follows wan2.1-t2v-1.3b's recommended guidance 6 (docs/models.md)
    assert t2v["guidance_scale"]["default"] == 6.0 and t2v["guidance_scale"]["type"] == "number"
    untrained = t2v["allow_untrained_size"]
    assert (untrained["type"], untrained["default"], untrained["choices"]) == ("boolean", False, ["false", "true"])
    assert "conditioning_scale" not in t2v and "refert_num" not in t2v
    assert (t2v["width"]["default"], t2v["height"]["default"], t2v["num_frames"]["default"]) == (64, 64, 9)
    assert t2v["seed"]["default"] is None and t2v["prompt"]["default"] == ""
    assert t2v["solver"]["choices"] == ["unipc", "dpm++", "euler"]
    assert "model" not in t2v and "task" not in t2v and "image" not in t2v


def test_list_models_parameters_are_those_of_the_task(client):
    t2v, v2v, t2i = by_id(client)["tiny-t2v"]["tasks"]
    assert "strength" not in params_of(t2v) and "animate_mode" not in params_of(t2v)
    assert "strength" not in params_of(t2i) and "fps" not in params_of(t2i)
    assert params_of(v2v)["strength"]["default"] == 0.8 and v2v["required_inputs"] == ["video"]


def test_list_models_second_expert_fields_only_for_two_expert_models(client):
    models = by_id(client)
    one = params_of(models["tiny-t2v"]["tasks"][0])
    two = params_of(models["tiny-t2v-moe"]["tasks"][0])
    assert "guidance_scale_2" not in one and "boundary_ratio" not in one
    assert two["guidance_scale_2"]["default"] == 3.0 and two["boundary_ratio"]["default"] == 0.875


def test_list_models_media_inputs_per_task(client):
    models = by_id(client)
    tasks = {t["task"]: t for m in models.values() for t in m["tasks"] if m["id"] != "tiny-t2v"}
    assert (tasks["flf2v"]["required_inputs"], tasks["flf2v"]["optional_inputs"]) == (["image", "last_image"], [])
    assert tasks["vace"]["required_inputs"] == [] and tasks["vace"]["optional_inputs"] == [
        "mask",
        "reference_images",
        "video",
    ]
    assert tasks["animate"]["required_inputs"] == ["face_video", "image", "pose_video"]
    assert tasks["animate"]["optional_inputs"] == ["background_video", "mask"]
    animate = params_of(tasks["animate"])
    assert animate["animate_mode"]["choices"] == ["animate", "replace"] and animate["refert_num"]["default"] == 1
    assert not {"width", "height", "num_frames"} & set(animate)  # the pose video's
    assert params_of(tasks["vace"])["conditioning_scale"]["default"] == 1.0
    assert all(t["output"] == "video" for t in tasks.values())


def test_list_models_needs_the_api_key_when_set(tmp_path):
    settings = Settings(data_dir=tmp_path, models=["tiny-t2v"], api_key="secret")
    with TestClient(create_app(settings, start_workers=False)) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer secret"}).status_code == 200
        assert client.get("/").status_code == 200  # the page itself is public; it asks for the key


def test_index_serves_the_page_and_its_modules(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/web/js/app.js">' in page.text
    for path in ("/web/js/app.js", "/web/js/api.js", "/web/js/form.js", "/web/js/jobs.js", "/web/style.css"):
        assert client.get(path).status_code == 200, path
    assert client.get("/web/missing.js").status_code == 404


def test_docs_pages_load_their_assets_from_this_server(client):
    for path in ("/docs", "/redoc"):
        html = client.get(path).text
        assert "cdn.jsdelivr.net" not in html and "fonts.googleapis.com" not in html
    swagger = client.get("/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in swagger
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static-offline-docs/redoc.standalone.js").status_code == 200
    assert "/v1/models" in client.get("/openapi.json").json()["paths"]
