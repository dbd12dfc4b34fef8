"""A fake of each SMS provider, for the tests and the demo: it 'sends', pushes signed callbacks
with configurable untidiness, and answers the providers' status endpoints."""

from receiver.simulator.app import create_simulator
from receiver.simulator.config import Accounts, SimConfig, StandardSource
from receiver.simulator.model import Realism, Timing

__all__ = ["Accounts", "Realism", "SimConfig", "StandardSource", "Timing", "create_simulator"]
