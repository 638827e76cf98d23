"""Pytest fixtures: one emulator server per session, `emulator` gives each test a clean view of it."""
from __future__ import annotations

import pytest

from .server import Emulator, SilentServer


@pytest.fixture(scope="session")
def emulator_server():
    """The running server (127.0.0.1, random port), shared by the whole session."""
    emu = Emulator().start()
    yield emu
    emu.stop()


@pytest.fixture
def emulator(emulator_server):
    """The shared server with requests, faults, scripts and expected keys reset for this test."""
    emulator_server.reset()
    yield emulator_server
    emulator_server.reset()


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers."""
    server = SilentServer()
    yield server
    server.stop()
