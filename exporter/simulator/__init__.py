"""A faithful Huawei Message & SMS platform on loopback, for tests, demos and drills.

Modules: ``scenario`` (the scenario file), ``traffic`` (deterministic message
generation), ``incidents`` (operator-injected failures), ``store`` (indexed messages),
``hold_calendar`` (review holds by hour), ``sent_blocks`` (messages sent through the
API), ``queries`` (what a query and the truth read of the store), ``clock``, ``gate``
(auth, throttling), ``faults``, ``api`` and ``catalog`` (the sending-details contract,
the template list), ``sending`` and ``sendapi`` (Huawei's ``batchSendSms``), ``push``
and ``callbacks`` (status reports), ``app`` (routing and the API endpoints), ``control``
(the ``/-/`` endpoints), ``server`` (HTTP on a socket), ``runner`` (the Python API) and
``cli``.
"""

from exporter.simulator.runner import RunningSimulator, SimulatorConfig, start_simulator

__all__ = ["RunningSimulator", "SimulatorConfig", "start_simulator"]
