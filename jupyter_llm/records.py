"""`@record`: a dataclass whose methods are shared closures instead of compiled code, so defining one is cheap.

`@dataclass` compiles `__init__`, `__repr__`, `__eq__` (and, frozen, `__hash__`, `__setattr__` and
`__delattr__`) from source text for every class: about 0.4 ms each on CPython 3.11. The 22 classes a
kernel's first `%%llm` cell imports cost about 10 ms that way, most of it before the request is sent.
A `@record` class is still a real dataclass (`dataclasses.fields`, `replace`, `asdict`, `is_dataclass`
and `__match_args__` all work) with the same constructor, repr, equality, hashing and frozenness; only
its methods are generic. Methods written in the class body are kept, as `@dataclass` keeps them.
It takes only `frozen`: no `order`, `unsafe_hash` or `slots`; `InitVar` and `kw_only` fields are refused.
"""
from __future__ import annotations

import dataclasses
import reprlib
from dataclasses import MISSING, FrozenInstanceError
from typing import Any, Callable, TypeVar

__all__ = ["record"]

T = TypeVar("T", bound=type)


def record(cls: T | None = None, *, frozen: bool = False) -> T | Callable[[T], T]:
    """`@record` or `@record(frozen=True)`: as `@dataclass` / `@dataclass(frozen=True)`."""
    def wrap(c: T) -> T:
        return _build(c, frozen)
    return wrap if cls is None else wrap(cls)


def _build(cls: T, frozen: bool) -> T:
    own = set(cls.__dict__)
    for base in cls.__mro__[1:]:
        params = getattr(base, "__dataclass_params__", None)
        if params is not None and params.frozen != frozen:
            raise TypeError(f"{cls.__name__}: cannot mix frozen and non-frozen dataclasses")
    if any("InitVar" in str(a) for a in cls.__dict__.get("__annotations__", {}).values()):
        raise TypeError(f"{cls.__name__}: InitVar fields are not supported by @record")
    if not cls.__dict__.get("__doc__"):
        cls.__doc__ = cls.__name__   # (@dataclass would call inspect.signature for one)
    dataclasses.dataclass(cls, init=False, repr=False, eq=False, frozen=False)
    fields = dataclasses.fields(cls)
    for f in fields:
        if f.kw_only is True:
            raise TypeError(f"{cls.__name__}.{f.name}: kw_only is not supported by @record")
    every = tuple(f.name for f in fields)
    names = tuple(f.name for f in fields if f.init)
    index = {name: i for i, name in enumerate(names)}
    plan = tuple((f.name, f.init, f.default, f.default_factory) for f in fields)
    shown = tuple(f.name for f in fields if f.repr)
    compared = tuple(f.name for f in fields if f.compare)
    hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
    post_init = hasattr(cls, "__post_init__")
    setter = object.__setattr__ if frozen else setattr
    qual = cls.__qualname__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{qual}.__init__() takes {len(names) + 1} positional arguments but "
                            f"{len(args) + 1} were given")
        for key in kwargs:
            i = index.get(key)
            if i is None:
                raise TypeError(f"{qual}.__init__() got an unexpected keyword argument {key!r}")
            if i < len(args):
                raise TypeError(f"{qual}.__init__() got multiple values for argument {key!r}")
        given = len(args)
        for name, init, default, factory in plan:
            if init and index[name] < given:
                value = args[index[name]]
            elif init and name in kwargs:
                value = kwargs[name]
            elif default is not MISSING:
                value = default
            elif factory is not MISSING:
                value = factory()
            elif init:
                raise TypeError(f"{qual}.__init__() missing 1 required positional argument: {name!r}")
            else:
                continue   # init=False without a default: left unset, as @dataclass does
            setter(self, name, value)
        if post_init:
            self.__post_init__()

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        return f"{type(self).__qualname__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")"

    def __eq__(self, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return tuple(getattr(self, n) for n in compared) == tuple(getattr(other, n) for n in compared)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in hashed))

    def __setattr__(self, name: str, value: Any) -> None:
        if type(self) is cls or name in every:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if type(self) is cls or name in every:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    methods: dict[str, Any] = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
    if frozen:
        methods.update(__setattr__=__setattr__, __delattr__=__delattr__)
    for name, fn in methods.items():
        if name not in own:   # methods written in the class body are kept
            fn.__qualname__ = f"{qual}.{name}"
            setattr(cls, name, fn)
    if frozen and cls.__dict__.get("__hash__") is None:   # none written (a body's own __eq__ leaves None)
        __hash__.__qualname__ = f"{qual}.__hash__"
        cls.__hash__ = __hash__
    elif not frozen and "__hash__" not in own:
        cls.__hash__ = None   # as @dataclass(eq=True): mutable, so unhashable
    params = cls.__dataclass_params__   # what the class behaves as, for introspection and subclassing checks
    params.init = params.repr = params.eq = True
    params.frozen = frozen
    return cls
