"""Copies of a function's code, for call sites that see one type each.

CPython 3.11 specialises each attribute access in a function's bytecode for the type it
last saw there, and keeps that in the code object. Code shared by two classes (a method
both inherit, a function given objects of either) misses at each access whenever the
other type comes: it takes the generic lookup and, after enough misses, specialises again
for the other. A copy of the code per type keeps each copy's accesses specialised.
"""

from __future__ import annotations

from types import FunctionType


def copy_function(func: FunctionType, name: str, qualname: str | None = None, *,
                  defaults: tuple | None = None) -> FunctionType:
    """`func` with a code object of its own, named `name` (and other `defaults`)."""
    copy = FunctionType(func.__code__.replace(), func.__globals__, name,
                        func.__defaults__ if defaults is None else defaults, func.__closure__)
    copy.__qualname__ = qualname or name
    copy.__doc__ = func.__doc__
    copy.__kwdefaults__ = func.__kwdefaults__
    return copy
