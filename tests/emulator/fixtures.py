"""Fixtures for the provider emulator (filled in by the emulator work)."""
