"""The whole pipeline as separate processes (saga worker, reference wallet, ingress) on the
session's real Kafka and PostgreSQL, driven over HTTP like providers and operators do."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from agg_config.settings import Settings
from agg_config.tenants import load_tenants
from agg_devstack.process import free_port
from agg_devstack.services import ServiceProcess
from agg_ingress.client import encode_body, signed_headers

OPERATOR = "op-alpha"
PROVIDER = "prov-nova"
GAME = "nova-starfall"
STARTING_BALANCE = 100_000
DEMO_STARTING_BALANCE = 50_000
"""Demo play's starting balance in these pipelines: not the wallet's, to tell them apart."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


class Pipeline:
    def __init__(self, settings: Settings, root: Path, env: dict[str, str] | None = None,
                 projector_client: str | None = None, http_wallets: bool = False):  # fmt: skip
        """``env``: settings of this pipeline's services beyond the common ones below;
        ``projector_client``: the projector's Kafka client (``AGG_KAFKA_CLIENT``) when not the
        others'; ``http_wallets``: run the reference HTTP wallet and the bridge too, as the
        local stack does, so that the operators on HTTP wallets answer (the dev tenants with
        their wallet URLs on this pipeline's free port, ``AGG_TENANTS_FILE``)."""
        self.settings = settings
        self.root = root
        self.ingress_port = free_port()
        self.wallet_port = free_port()
        self.saga_port = free_port()
        self.projector_port = free_port()
        self.env = {
            "AGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "AGG_DATABASE_URL": settings.database_url,
            "AGG_SESSION_SECRET": settings.session_secret.get_secret_value(),
            "AGG_STATE_DIR": str(root),
            "AGG_INGRESS_PORT": str(self.ingress_port),
            "AGG_WALLET_METRICS_PORT": str(self.wallet_port),
            "AGG_SAGA_METRICS_PORT": str(self.saga_port),
            "AGG_INGRESS_METRICS_PORT": str(free_port()),
            "AGG_PROJECTOR_METRICS_PORT": str(self.projector_port),
            "AGG_WALLET_TIMEOUT_MS": "1000",
            "AGG_RETRY_BACKOFF_INITIAL_MS": "200",
            "AGG_RETRY_BACKOFF_MAX_MS": "1000",
            "AGG_DEMO_STARTING_BALANCE_MINOR": str(DEMO_STARTING_BALANCE),
            **(env or {}),
        }
        self.http_wallets: list[ServiceProcess] = []
        if http_wallets:
            wallet_port = free_port()
            tenants_file = root / "aggregator.yaml"
            tenants_file.write_text(settings.tenants_file.read_text().replace(
                "http://127.0.0.1:9186/", f"http://127.0.0.1:{wallet_port}/"))  # fmt: skip
            self.env.update({"AGG_TENANTS_FILE": str(tenants_file),
                             "AGG_HTTPWALLET_PORT": str(wallet_port),
                             "AGG_BRIDGE_METRICS_PORT": str(free_port())})  # fmt: skip
            self.http_wallets = [
                ServiceProcess(
                    "httpwallet", root / "services", "agg_httpwallet", [],
                    ready_url=f"http://127.0.0.1:{wallet_port}/healthz",
                ),
                ServiceProcess(
                    "bridge", root / "services", "agg_bridge", ["--client-id", "e2e-bridge"],
                    ready_log_text='"event":"partitions_assigned"',
                ),
            ]  # fmt: skip
        self.projector_env = dict(self.env)
        if projector_client is not None:
            self.projector_env["AGG_KAFKA_CLIENT"] = projector_client
        services = root / "services"
        self.sagas = [self._saga("saga-1")]
        self.wallet = ServiceProcess(
            "wallet", services, "agg_wallet", ["--client-id", "e2e-wallet"],
            ready_url=f"http://127.0.0.1:{self.wallet_port}/healthz",
        )  # fmt: skip
        self.projector = ServiceProcess(
            "projector", services, "agg_projector", ["--client-id", "e2e-projector"],
            ready_log_text='"event":"positions_restored"',
        )  # fmt: skip
        self.ingress = ServiceProcess(
            "ingress", services, "agg_ingress", [],
            ready_url=f"http://127.0.0.1:{self.ingress_port}/healthz",
        )  # fmt: skip
        tenants = load_tenants(settings.tenants_file)
        op = tenants.operator(OPERATOR)
        provider = tenants.provider(PROVIDER)
        assert op is not None and provider is not None
        self.operator_secret = op.secret.reveal()
        other = tenants.operator("op-beta")
        assert other is not None
        self.other_operator_secret = other.secret.reveal()
        self.provider_secret = provider.shared_secret()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.ingress_port}", timeout=15)

    def _saga(self, name: str) -> ServiceProcess:
        # only the first worker serves /metrics on the pipeline's saga port
        metrics = [] if name == "saga-1" else ["--metrics-port", "0"]
        return ServiceProcess(
            name, self.root / "services", "agg_saga", ["--client-id", f"e2e-{name}", *metrics],
            ready_log_text='"event":"partitions_assigned"',
        )  # fmt: skip

    def start(self) -> None:
        for service in (*self.sagas, self.wallet, *self.http_wallets, self.projector,
                        self.ingress):  # fmt: skip
            service.start(self.projector_env if service is self.projector else self.env, 90)

    def stop(self) -> None:
        self.http.close()
        for service in (self.ingress, self.projector, *self.http_wallets, self.wallet,
                        *self.sagas):  # fmt: skip
            service.stop()

    # --- operators and providers ------------------------------------------------------------

    def _post(self, secret: bytes, path: str, fields: dict[str, Any]) -> httpx.Response:
        body = encode_body(fields)
        return self.http.post(
            path, content=body, headers=signed_headers(secret, "POST", path, body)
        )

    def new_player(
        self, currency: str = "EUR", mode: str = "real", game: str = GAME
    ) -> tuple[str, str]:
        player = f"e2e-{uuid.uuid4().hex[:10]}"
        response = self._post(
            self.operator_secret,
            f"/v1/operators/{OPERATOR}/sessions",
            {"player_id": player, "currency": currency, "country": "MT", "game_id": game,
             "mode": mode},
        )  # fmt: skip
        assert response.status_code == 201, response.text
        return player, response.json()["session_token"]

    def callback(self, action: str, player: str, token: str, **fields: Any) -> httpx.Response:
        body = {"request_id": fields.pop("request_id", uuid.uuid4().hex), "session_token": token,
                "player_id": player, "currency": fields.pop("currency", "EUR"),
                "game_id": GAME, **fields}  # fmt: skip
        return self._post(self.provider_secret, f"/v1/providers/{PROVIDER}/wallet/{action}", body)

    def bet(self, player: str, token: str, txn: str, amount: int, **kw: Any) -> httpx.Response:
        kw.setdefault("round_id", "rnd-1")
        return self.callback("bet", player, token, transaction_id=txn, amount=amount, **kw)

    def win(self, player: str, token: str, txn: str, amount: int, **kw: Any) -> httpx.Response:
        kw.setdefault("round_id", "rnd-1")
        return self.callback("win", player, token, transaction_id=txn, amount=amount, **kw)

    def rollback(self, player: str, token: str, txn: str, bet_txn: str) -> httpx.Response:
        return self.callback("rollback", player, token, transaction_id=txn,
                             reference_transaction_id=bet_txn, round_id="rnd-1")  # fmt: skip

    def read(self, path: str, secret: bytes | None = None) -> httpx.Response:
        """A signed GET of the operator read API (as op-alpha unless another secret)."""
        headers = signed_headers(secret or self.operator_secret, "GET", path, b"")
        return self.http.get(path, headers=headers)

    # --- the operator's wallet ---------------------------------------------------------------

    def wallet_balance(self, player: str) -> int | None:
        with psycopg.connect(self.settings.database_url) as conn:
            row = conn.execute(
                "select balance from wallet.players where operator_id = %s and player_id = %s",
                (OPERATOR, player),
            ).fetchone()
        return None if row is None else int(row[0])

    def projected_balance(self, player: str, currency: str = "EUR") -> int | None:
        """The last balance the wallet reported, as the projector has it."""
        with psycopg.connect(self.settings.database_url) as conn:
            row = conn.execute(
                "select balance from projection.balances"
                " where operator_id = %s and player_id = %s and currency = %s",
                (OPERATOR, player, currency),
            ).fetchone()
        return None if row is None else int(row[0])

    def balance_mismatches(self, player: str) -> list[tuple[Any, ...]]:
        """``aggregator reconcile``'s wallet-against-journal rows for ``player`` (live
        projections, the reference wallet's ledger), money in flight or not."""
        from datetime import timedelta

        from psycopg import sql

        from agg_projector.reconcile import WALLET_MISMATCHES

        query = sql.SQL(WALLET_MISMATCHES).format(
            s=sql.Identifier("projection"), w=sql.Identifier("wallet")
        )
        with psycopg.connect(self.settings.database_url) as conn:
            found = conn.execute(query, {"in_flight": timedelta(0)}).fetchall()
        return [row for row in found if row[1] == player]

    def wallet_mode(self, mode: str, delay_ms: int = 0) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.wallet_port}/mode",
            data=json.dumps({"mode": mode, "delay_ms": delay_ms}).encode(),
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200


@pytest.fixture(scope="module", params=["librdkafka", "aiokafka"])
def projector_client(request: pytest.FixtureRequest) -> str:
    """Every module's pipeline runs twice: with the projector on each Kafka client of the
    transport (the other services on the default client)."""
    return str(request.param)


@pytest.fixture(scope="module")
def pipeline(
    settings: Settings,
    catalogue_topics: list[str],
    tmp_path_factory: pytest.TempPathFactory,
    projector_client: str,
) -> Iterator[Pipeline]:
    """The services run for one test module only: other modules start their own saga
    workers and wallets in the same consumer groups, and must not meet these."""
    p = Pipeline(settings, tmp_path_factory.mktemp("pipeline"), projector_client=projector_client)
    try:
        p.start()
        yield p
    finally:
        p.stop()
