"""`@record` behaves as `@dataclass` for every shape the package uses, and compiles nothing."""
from __future__ import annotations

import builtins
import copy
import dataclasses
import pickle
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from jupyter_llm.records import record


def _shapes(deco, frozen_deco):
    @frozen_deco
    class Delta:
        text: str

    @frozen_deco
    class Counts:
        input_tokens: int = 0
        output_tokens: int = 0

        @property
        def total(self) -> int:
            return self.input_tokens + self.output_tokens

    @deco
    class Reply:
        """A mutable one with factories, hidden and uncompared fields."""
        target: str
        text: str = ""
        usage: Counts = field(default_factory=Counts)
        notes: list = field(default_factory=list)
        chunks: list = field(default_factory=list, repr=False)
        run: Any = field(default=None, repr=False, compare=False)

    @frozen_deco
    class Spec:
        id: str
        settings: dict = field(default_factory=dict, hash=False, compare=False)

    @deco
    class Breaker:
        failures: int = 0
        lock: Any = field(default_factory=threading.Lock, repr=False)

    @deco
    class Masked:
        secret: str

        def __repr__(self) -> str:
            return "Masked(****)"

    @deco
    class Later:
        a: int
        b: int = field(init=False, default=7)

        def __post_init__(self):
            self.c = self.a * 2
    return {"Delta": Delta, "Counts": Counts, "Reply": Reply, "Spec": Spec, "Breaker": Breaker,
            "Masked": Masked, "Later": Later}


def _frozen_dc(cls):
    return dataclass(frozen=True)(cls)


def _frozen_rec(cls):
    return record(frozen=True)(cls)


DC = _shapes(dataclass, _frozen_dc)
REC = _shapes(record, _frozen_rec)

CALLS = [("Delta", ("hi",), {}), ("Delta", (), {"text": "hi"}), ("Counts", (), {}), ("Counts", (3,), {"output_tokens": 4}),
         ("Reply", ("openai",), {}), ("Reply", ("openai", "x"), {"notes": ["n"]}), ("Spec", ("local",), {"settings": {"a": 1}}),
         ("Breaker", (), {"failures": 2}), ("Masked", ("sk-1",), {}), ("Later", (5,), {})]
BAD = [("Delta", (), {}), ("Delta", ("a", "b"), {}), ("Delta", ("a",), {"text": "b"}), ("Delta", (), {"txt": "a"}),
       ("Later", (1,), {"b": 2}), ("Reply", (), {})]


def _view(obj):
    """What a user can observe of an instance."""
    out = {"repr": repr(obj) if not isinstance(obj, REC["Breaker"] | DC["Breaker"]) else None,
           "fields": [(f.name, f.init, f.repr, f.compare) for f in dataclasses.fields(obj)],
           "match": type(obj).__match_args__, "is_dc": dataclasses.is_dataclass(obj)}
    try:
        out["asdict"] = dataclasses.asdict(obj)
    except TypeError:   # a lock does not deep-copy
        out["asdict"] = "TypeError"
    try:
        out["hash"] = hash(obj)
    except TypeError:
        out["hash"] = "unhashable"
    return out


@pytest.mark.parametrize("name,args,kwargs", CALLS)
def test_instances_look_and_compare_the_same(name, args, kwargs):
    a, b = DC[name](*args, **kwargs), REC[name](*args, **kwargs)
    assert _view(a) == _view(b)
    same = DC[name](*args, **kwargs) == a   # False only where a field is a fresh lock each time
    assert (REC[name](*args, **kwargs) == b) is same and (b != REC[name](*args, **kwargs)) is not same
    assert (b == a) is False   # another class is never equal, as with @dataclass
    if name == "Later":
        assert (b.b, b.c) == (a.b, a.c) == (7, 10)


@pytest.mark.parametrize("name,args,kwargs", BAD)
def test_bad_construction_raises_type_error_the_same(name, args, kwargs):
    with pytest.raises(TypeError):
        DC[name](*args, **kwargs)
    with pytest.raises(TypeError):
        REC[name](*args, **kwargs)


def test_frozen_is_frozen_and_mutable_is_unhashable():
    d = REC["Delta"]("hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.text = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del d.text
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.other = 1   # as @dataclass(frozen=True): no new attributes either
    assert REC["Delta"].__hash__ is not None and REC["Reply"].__hash__ is None and DC["Reply"].__hash__ is None
    r = REC["Reply"]("t")
    r.text = "changed"
    assert r.text == "changed"
    assert dataclasses.fields(REC["Delta"])[0].name == "text"
    assert REC["Delta"].__dataclass_params__.frozen and not REC["Reply"].__dataclass_params__.frozen


def test_uncompared_fields_are_left_out_of_eq_and_hash():
    assert REC["Spec"]("a", {"x": 1}) == REC["Spec"]("a", {"y": 2})
    assert hash(REC["Spec"]("a", {"x": 1})) == hash(REC["Spec"]("a")) == hash(DC["Spec"]("a"))
    assert REC["Reply"]("t", run=1) == REC["Reply"]("t", run=2)


def test_replace_copy_pickle_and_subclass():
    c = REC["Counts"](1, 2)
    assert dataclasses.replace(c, output_tokens=5) == REC["Counts"](1, 5) and c.total == 3
    assert copy.copy(c) == c and copy.deepcopy(REC["Reply"]("t", notes=["a"])) == REC["Reply"]("t", notes=["a"])
    r = REC["Reply"]("t")
    r2 = dataclasses.replace(r, text="x")
    assert r2.usage == r.usage and r2.text == "x"

    class Sub(REC["Counts"]):
        pass
    s = Sub(1)
    assert repr(s) == "test_replace_copy_pickle_and_subclass.<locals>.Sub(input_tokens=1, output_tokens=0)"
    s.extra = 1   # a plain subclass of a frozen record is not itself frozen, as with @dataclass
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.input_tokens = 2
    with pytest.raises(TypeError):
        record(type("Bad", (REC["Counts"],), {"__annotations__": {"z": int}, "z": 0}))


def test_what_record_cannot_do_is_refused():
    with pytest.raises(TypeError, match="InitVar"):
        record(type("A", (), {"__annotations__": {"x": "dataclasses.InitVar[int]"}}))
    with pytest.raises(TypeError, match="kw_only"):
        record(type("B", (), {"__annotations__": {"x": "int"}, "x": field(default=0, kw_only=True)}))


def test_real_package_records_pickle():
    from jupyter_llm.events import Response, TextDelta, Usage
    r = Response(target="openai:gpt-4o-mini", text="hi", usage=Usage(1, 2))
    back = pickle.loads(pickle.dumps(r))
    assert back == r and back.usage.total_tokens == 3
    assert pickle.loads(pickle.dumps(TextDelta("x"))) == TextDelta("x")


def test_a_recursive_repr_does_not_recurse():
    r = REC["Reply"]("t")
    r.notes.append(r)
    assert "..." in repr(r)


def test_defining_a_record_compiles_nothing(monkeypatch):
    seen = []
    real = builtins.exec

    def spy(*a, **k):
        seen.append(a[0])
        return real(*a, **k)
    monkeypatch.setattr(builtins, "exec", spy)
    _shapes(record, _frozen_rec)
    assert seen == []
    _shapes(dataclass, _frozen_dc)
    assert seen   # the spy works: @dataclass does compile
