"""The compact price table (price_table.py): it agrees with genai-prices to the last digit, flat and tiered;
a later kernel reads it without importing genai-prices; stale, foreign, corrupt or unwritable files never
give a wrong price."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from decimal import Decimal

import pytest

from jupyter_llm import price_table, pricing
from jupyter_llm.events import Usage

SAMPLE = [("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("anthropic", "claude-3-5-haiku-latest"),
          ("anthropic", "claude-sonnet-4-5"), ("gemini", "gemini-2.5-pro"), ("gemini", "models/gemini-2.0-flash"),
          ("deepseek", "deepseek-chat"), ("groq", "llama-3.1-8b-instant"), ("openrouter", "openai/gpt-4o")]


@pytest.fixture
def table(isolated_env):
    price_table.reset()
    pricing.context_window.cache_clear()
    yield price_table.path()
    price_table.reset()
    pricing.context_window.cache_clear()


def _genai(provider: str, model: str, inp: int, out: int) -> Decimal | None:
    from genai_prices import Usage as GUsage, calc_price
    where = pricing._where(provider, model)
    if where is None:
        return None
    return calc_price(GUsage(input_tokens=inp, output_tokens=out), where[1], provider_id=where[0]).total_price


@pytest.mark.parametrize("provider,model", SAMPLE)
def test_costs_equal_genai_prices_exactly(table, provider, model):
    rng = random.Random(f"{provider}/{model}")
    usages = [(0, 0), (1, 1), (200_000, 10), (200_001, 10), (1_000_000, 50_000)]
    usages += [(rng.randint(0, 1_500_000), rng.randint(0, 100_000)) for _ in range(25)]
    for inp, out in usages:
        expected = _genai(provider, model, inp, out)
        got = pricing._calc(provider, model, inp, out)
        assert got == expected, (provider, model, inp, out)
    assert table.exists()
    entry = json.loads(table.read_text())["entries"][f"{provider}|{model}"]
    assert entry is not None and "ctx" in entry


def test_tiered_price_crosses_its_threshold(table):
    entry = price_table.entry("anthropic", "claude-sonnet-4-5")
    assert entry["exact"] and isinstance(entry["in"], dict) and entry["in"]["tiers"]
    start = entry["in"]["tiers"][0][0]
    below = pricing.cost("anthropic", "claude-sonnet-4-5", Usage(start, 1000))
    above = pricing.cost("anthropic", "claude-sonnet-4-5", Usage(start + 1, 1000))
    assert above > below * 1.5   # the whole request pays the higher tier once past it


def test_time_of_day_prices_stay_with_genai_prices(table):
    entry = price_table.entry("deepseek", "deepseek-chat")
    assert entry["exact"] is False and entry["ctx"]
    assert pricing._calc("deepseek", "deepseek-chat", 1234, 567) == _genai("deepseek", "deepseek-chat", 1234, 567)


def _child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


CHILD = """import json, sys
from jupyter_llm import pricing
from jupyter_llm.events import Usage
print(json.dumps({"cost": pricing.cost("openai", "gpt-4o-mini", Usage(1234, 567)),
                  "ctx": pricing.context_window("openai", "gpt-4o-mini"),
                  "unknown": pricing.cost("openai", "no-such-model-xyz", Usage(1, 1)),
                  "genai": "genai_prices" in sys.modules}))
"""


def test_a_later_process_prices_without_importing_genai_prices(table):
    cold = _child(CHILD)
    assert cold["genai"] is True and table.exists()          # the first use fills the table
    warm = _child(CHILD)
    assert warm == dict(cold, genai=False)                  # the same answers, from the file alone
    assert warm["cost"] == float(_genai("openai", "gpt-4o-mini", 1234, 567)) and warm["ctx"] == 128000
    assert warm["unknown"] is None                          # "unknown" is remembered too


@pytest.mark.parametrize("damage", ["foreign", "corrupt", "expired", "wrong-entry-shape"])
def test_a_stale_or_broken_table_is_never_believed(table, damage):
    _child(CHILD)
    doc = json.loads(table.read_text())
    key = "openai|gpt-4o-mini"
    if damage == "foreign":      # written for another genai-prices release: prices may have changed
        doc["source"] += "-an-older-release"
        doc["entries"][key] = dict(doc["entries"][key], **{"in": "99", "out": "99"})
        table.write_text(json.dumps(doc))
    elif damage == "corrupt":
        table.write_text('{"format": 1, "source": ')
    elif damage == "expired":    # a scheduled price change has started since the entry was made
        doc["entries"][key] = dict(doc["entries"][key], **{"in": "99", "out": "99", "until": "2000-01-01"})
        table.write_text(json.dumps(doc))
    else:
        doc["entries"][key] = dict(doc["entries"][key], **{"in": "99"})
        doc["source"] = "something else entirely"
        table.write_text(json.dumps(doc))
    got = _child(CHILD)
    assert got["cost"] == float(_genai("openai", "gpt-4o-mini", 1234, 567))
    assert got["genai"] is True                             # looked up again, and the file repaired
    assert _child(CHILD)["genai"] is False


def test_an_unwritable_data_dir_still_prices_correctly(table, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    monkeypatch.setenv("JUPYTER_LLM_DATA_DIR", str(blocker / "data"))
    price_table.reset()
    assert pricing._calc("openai", "gpt-4o-mini", 1000, 1000) == _genai("openai", "gpt-4o-mini", 1000, 1000)
    assert pricing._calc("openai", "gpt-4o-mini", 10, 10) == _genai("openai", "gpt-4o-mini", 10, 10)


def test_kernels_sharing_a_table_merge_their_entries(table):
    a = ("import json; from jupyter_llm import pricing; from jupyter_llm.events import Usage; "
         "print(json.dumps(pricing.cost({!r}, {!r}, Usage(10, 10))))")
    subprocess.run([sys.executable, "-c", a.format("openai", "gpt-4o-mini")], check=True, capture_output=True, timeout=120)
    subprocess.run([sys.executable, "-c", a.format("anthropic", "claude-3-5-haiku-latest")], check=True,
                   capture_output=True, timeout=120)
    entries = json.loads(table.read_text())["entries"]
    assert {"openai|gpt-4o-mini", "anthropic|claude-3-5-haiku-latest"} <= set(entries)
