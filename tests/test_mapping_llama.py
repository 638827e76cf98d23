"""Prompting over data on a real llama.cpp server (tiny generated model): grammar-constrained `json_schema`
makes even random weights answer schema-valid rows; workers default to the server's slots."""
from __future__ import annotations

from typing import Literal

import pytest

from jupyter_llm.config import load_config
from jupyter_llm.kernel_session import Session
from jupyter_llm.mapping import default_workers, map_rows
from jupyter_llm.schema import validate


@pytest.fixture
def local(llama_server, isolated_env):
    path = isolated_env / "config.toml"
    path.write_text(f'default = "local:{llama_server.port}"\n')
    return Session(load_config(path, strict=True))


def test_schema_valid_rows_from_the_tiny_model(local, llama_server):
    from pydantic import BaseModel, Field

    class Review(BaseModel):
        sentiment: Literal["positive", "negative", "neutral"]
        stars: int = Field(ge=1, le=5)
        spam: bool

    reviews = ["great product", "broke after a day", "it is fine", "would buy again", "meh"]
    frame = map_rows(local, "Review: {item}\nClassify it.", reviews, schema=Review, max_tokens=200,
                     temperature=0, progress=False)
    assert list(frame.columns[:3]) == ["sentiment", "stars", "spam"]
    assert (frame["status"] == "ok").all(), frame[["status", "error"]]
    schema = Review.model_json_schema()
    for _, row in frame.iterrows():
        validate(schema, {"sentiment": row["sentiment"], "stars": int(row["stars"]), "spam": bool(row["spam"])})
    assert frame["answered_by"].str.startswith(f"local:{llama_server.port}").all()
    assert (frame["cost"] == 0).all() and (frame["output_tokens"] > 0).all()
    assert frame.attrs["summary"][str(local.active)]["schema_valid_rate"] == 1.0


def test_dict_schema_grid_and_slot_default(local, llama_server):
    assert default_workers(local, local.active) == llama_server.parallel
    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}, "n": {"type": "integer",
              "minimum": 0, "maximum": 9}}, "required": ["label", "n"]}
    target = f"local:{llama_server.port}"
    frame = map_rows(local, "{item}", ["x", "y", "z"], schema=schema, compare=[target], max_tokens=120,
                     temperature=0, progress=False)
    assert (frame[(target, "status")] == "ok").all()
    assert set(frame[(target, "label")]) <= {"a", "b"} and frame[(target, "n")].between(0, 9).all()


def test_images_to_a_text_only_llama_server_are_refused(local, tmp_path):
    import base64
    from jupyter_llm.errors import LLMError
    path = tmp_path / "a.png"
    path.write_bytes(base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="))
    with pytest.raises(LLMError) as err:
        map_rows(local, "what {item}", [1], attach=[str(path)], progress=False)
    assert err.value.code == "BAD_ARGUMENT" and "no vision support" in err.value.message
