"""The %%llm face of prompting over data in a real IPython shell: --map, --schema, --attach, --dry-run, and
`{df}` / images in prompts (media.py)."""
from __future__ import annotations

import base64

import pandas as pd
import pytest

import jupyter_llm
from jupyter_llm.errors import LLMError
from jupyter_llm.media import markdown_table, render
from tests.test_magics import assert_one_line_error, ip, run  # noqa: F401  (the `ip` fixture)

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


@pytest.fixture(autouse=True)
def _clean(ip):  # noqa: F811
    yield
    for name in ("_llm_map", "res", "df", "Label", "items", "img", "S"):
        ip.user_ns.pop(name, None)


def test_map_cell_stores_the_frame_and_shows_its_head(ip, capsys, emulator):  # noqa: F811
    ip.user_ns["df"] = pd.DataFrame({"text": ["alpha", "beta"]}, index=["x", "y"])
    result, out, err = run(ip, capsys, '%%llm --map df -o res --workers 2\nSay {row["text"]} ({index})')
    assert result.success, err
    frame = ip.user_ns["_llm_map"]
    assert frame is ip.user_ns["res"] and list(frame.index) == ["x", "y"]
    assert (frame["status"] == "ok").all() and "Say beta (y)" in frame.loc["y", "answer"]
    assert "2 rows in" in out and "2 ok" in out         # the summary line, then the head
    assert "answered_by" in out
    assert "_llm" not in ip.user_ns or ip.user_ns["_llm"] is None or True


def test_map_cell_with_a_target_a_schema_and_a_grid(ip, capsys, emulator):  # noqa: F811
    ip.run_cell("from pydantic import BaseModel\nfrom typing import Literal\n"
                "class Label(BaseModel):\n    sentiment: Literal['pos', 'neg']\n    score: int\n")
    ip.user_ns["items"] = ["good", "bad", "fine"]
    result, out, err = run(ip, capsys, "%%llm anthropic --map items --schema Label\nClassify {item}")
    assert result.success, err
    frame = ip.user_ns["_llm_map"]
    assert list(frame.columns[:2]) == ["sentiment", "score"] and (frame["answered_by"] == "anthropic").all()
    result, out, err = run(ip, capsys, "%%llm --map items --schema Label --compare openai gemini\nClassify {item}")
    assert result.success, err
    grid = ip.user_ns["_llm_map"]
    assert list(grid.columns.get_level_values(0).unique()) == ["openai", "gemini"]
    assert set(grid.attrs["summary"]) == {"openai", "gemini"}


def test_single_cell_schema_returns_the_model_instance(ip, capsys, emulator):  # noqa: F811
    ip.run_cell("from pydantic import BaseModel\nclass S(BaseModel):\n    n: int\n    word: str\n")
    result, out, err = run(ip, capsys, "%%llm --schema S -o res\nGive me a number")
    assert result.success, err
    value = ip.user_ns["res"]
    assert type(value).__name__ == "S" and isinstance(value.n, int)
    assert ip.user_ns["_llm"].value is value and result.result is value
    body = emulator.calls("openai")[-1].body
    assert body["response_format"]["json_schema"]["name"] == "S"
    emulator.script("nope")
    result, out, err = run(ip, capsys, "%%llm --schema S\nAgain")
    assert_one_line_error(result, err, "INVALID_OUTPUT")


@pytest.mark.parametrize("source,code", [
    ("%%llm --map nothing_here\n{item}", "BAD_ARGUMENT"),
    ("%%llm --map items --schema NoSuch\n{item}", "BAD_ARGUMENT"),
    ("%%llm --map items\n{row.missing_field}", "BAD_ARGUMENT"),
    ("%%llm --map items --workers 0\n{item}", "BAD_ARGUMENT"),
    ("%%llm --map items -f code\n{item}", "BAD_ARGUMENT"),
    ("%%llm --workers 3\nhi", "BAD_ARGUMENT"),
    ("%%llm --attach /no/such.png\nhi", "BAD_ARGUMENT"),
    ("%%llm --map items --schema items\n{item}", "BAD_ARGUMENT"),
])
def test_bad_map_cells_are_one_coded_line(ip, capsys, emulator, source, code):  # noqa: F811
    ip.user_ns["items"] = ["a", "b"]
    result, out, err = run(ip, capsys, source)
    assert_one_line_error(result, err, code)
    assert emulator.calls(None) == []


def test_dry_run_shows_first_prompt_rows_tokens_and_cost(ip, capsys, emulator):  # noqa: F811
    ip.user_ns["items"] = ["first item", "second"]
    result, out, err = run(ip, capsys, "%%llm --map items --dry-run --compare openai anthropic\nAbout {item}")
    assert result.success, err
    text = repr(result.result)
    assert "About first item" in text and "openai" in text and "anthropic" in text and "nothing was sent" in text
    assert emulator.calls(None) == []


def test_attach_and_ipython_image_go_as_image_parts(ip, capsys, emulator, tmp_path):  # noqa: F811
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    result, out, err = run(ip, capsys, f"%%llm --attach {path}\nWhat is this?")
    assert result.success, err
    content = emulator.calls("openai")[-1].body["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"} and content[1]["type"] == "image_url"
    ip.run_cell(f"from IPython.display import Image\nimg = Image(filename={str(path)!r})")
    result, out, err = run(ip, capsys, "%%llm anthropic --no-history\nBefore {img} after")
    assert result.success, err
    blocks = emulator.calls("anthropic")[-1].body["messages"][-1]["content"]
    assert [b["type"] for b in blocks] == ["text", "image", "text"] and blocks[2]["text"] == " after"
    assert ip.session.conversation[-2]["content"] == "What is this? [image 1]"


def test_dataframe_becomes_a_compact_markdown_table():
    df = pd.DataFrame({"a": range(30), "b|c": ["x\ny"] * 30}, index=pd.Index(range(30), name="id"))
    text = markdown_table(df, 3)
    assert text.startswith("DataFrame, 30 rows × 2 columns (first 3 of 30 rows):")
    lines = text.splitlines()
    assert lines[2] == "| id | a | b\\|c |" and lines[3] == "|---|---|---|" and lines[4] == "| 0 | 0 | x y |"
    assert len(lines) == 7
    content, prompt = render("Data: {df}\nShape {df.shape}", {"df": df}, table_rows=2)
    assert content == prompt and "first 2 of 30 rows" in prompt and "Shape (30, 2)" in prompt


def test_table_rows_setting(ip, capsys, emulator):  # noqa: F811
    ip.user_ns["df"] = pd.DataFrame({"v": range(50)})
    ip.run_line_magic("llm", "set table_rows=4")
    result, out, err = run(ip, capsys, "%%llm --no-history\nLook: {df}")
    assert result.success, err
    sent = emulator.calls("openai")[-1].body["messages"][-1]["content"]
    assert "first 4 of 50 rows" in sent and "| 3 | 3 |" in sent and "| 4 | 4 |" not in sent
    with pytest.raises(LLMError):
        ip.session.set(table_rows=0)


def test_python_api_map(ip, emulator):  # noqa: F811
    ip.user_ns["where"] = "Rome"
    frame = jupyter_llm.map("{item} in {where}", ["a", "b"], target="gemini", progress=False)
    assert (frame["status"] == "ok").all() and "a in Rome" in frame.loc[0, "answer"]


def test_pil_images_and_matplotlib_figures_become_image_parts():
    Image = pytest.importorskip("PIL.Image")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([1, 2, 3])
    pic = Image.new("RGB", (4, 3), "red")
    content, prompt = render("Chart {fig} and photo {pic}.", {"fig": fig, "pic": pic})
    plt.close(fig)
    assert [p["type"] for p in content] == ["text", "image", "text", "image", "text"]
    assert prompt == "Chart [image 1] and photo [image 2]."
    for part in (content[1], content[3]):
        assert part["mime"] == "image/png" and base64.b64decode(part["data"]).startswith(b"\x89PNG")
    assert Image.open(__import__("io").BytesIO(base64.b64decode(content[3]["data"]))).size == (4, 3)
