"""The push stores' contract suite once more, on PostgreSQL behind PgBouncer in
transaction mode: every test of ``test_pushstore.py`` that opens a store (through the
``open_store`` or ``store`` fixture) runs here with its store reached through the pooler.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest
import test_pushstore
from conftest import Opener
from pgbouncer import PgBouncer
from postgres_server import PostgresServer

from exporter.pgstore import PostgresStore

clock = test_pushstore.clock
store = test_pushstore.store

for _name, _test in vars(test_pushstore).items():
    if _name.startswith("test_") and {"open_store", "store"} & set(
        inspect.signature(_test).parameters
    ):
        globals()[_name] = _test


@pytest.fixture
def bouncer(postgres: PostgresServer) -> Iterator[PgBouncer]:
    with PgBouncer.running(postgres, postgres.new_schema()) as running:
        yield running


@pytest.fixture
def open_store(bouncer: PgBouncer) -> Opener:
    """Stores of one fresh schema, reached through PgBouncer (prepared statements off)."""
    url = bouncer.url() + "?prepared_statements=off"
    return lambda **kw: PostgresStore(url, **kw)
