"""A faithful Huawei Message & SMS platform on loopback, for tests, demos and drills.

Modules: ``scenario`` (the scenario file), ``traffic`` (deterministic message
generation), ``incidents`` (operator-injected failures), ``store`` (indexed messages,
queries and truth), ``clock``, ``gate`` (auth, throttling, faults), ``sending`` and
``sendapi`` (Huawei's ``batchSendSms``), ``push`` and ``callbacks`` (status reports),
``server`` (HTTP), ``runner`` (the Python API) and ``cli``.
"""

from exporter.simulator.runner import RunningSimulator, SimulatorConfig, start_simulator

__all__ = ["RunningSimulator", "SimulatorConfig", "start_simulator"]
